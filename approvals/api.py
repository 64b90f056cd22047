"""REST API for reviews and leases (token-authenticated), so reviews can be automated and tested.

    GET  /approvals/api/reviews/?state=pending     list (default: pending)
    GET  /approvals/api/reviews/<id>/              one review with its body, dry-run preview, votes and history
    POST /approvals/api/reviews/<id>/approve/      {"reason", "scope": "once"|"window", "window_seconds", "unmask",
                                                    "release_token"}
                                                   ("window" is refused, 400, when ``window_refusal`` is set;
                                                   ``release_token`` only, and not ``unmask``, when
                                                   ``token_request`` is true: whether the agent receives the
                                                   ServiceAccount token; if not, nothing is sent to the cluster)
    POST /approvals/api/reviews/<id>/deny/         {"reason"}
    GET  /approvals/api/leases/?state=granted      list (default: all)
    POST /approvals/api/leases/                    {"connection", "subject"|"group", "issuer", "rules", "duration", "reason"}
    POST /approvals/api/leases/<id>/grant/         {"reason"}
    POST /approvals/api/leases/<id>/deny/          {"reason"}
    POST /approvals/api/leases/<id>/revoke/        {"reason"}

Authorization: ``approvals.view_review`` / ``approvals.decide_review`` for
reviews; ``approvals.view_lease``, ``approvals.request_lease`` and
``approvals.grant_lease`` for leases (the "reviewers" group has all but
request_lease).  The rules about who may decide what live in
approvals.reviews and approvals.leases.
"""

from django.urls import path
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals import leases, reviews
from approvals.hold import review_url
from approvals.models import Lease, LeaseState, Review, ReviewState

MAX_LIST = 200


class ReviewSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    approvals = serializers.SerializerMethodField()
    window_refusal = serializers.SerializerMethodField()
    token_request = serializers.BooleanField(source="is_token_request", read_only=True)

    class Meta:
        model = Review
        fields = [
            "id", "state", "url", "connection", "rule_name", "principal_username", "principal_subject",
            "principal_groups", "proxy_username", "proxy_subject", "description", "verb", "api_group", "api_version", "resource", "subresource",
            "namespace", "name", "method", "transport", "path", "query", "headers", "body_state", "body_sha256",
            "dry_run_note", "origin", "window_refusal", "token_request", "min_approvals",
            "reviewer_groups", "approvals", "scope", "unmask", "release_token", "reason", "decided_by", "created_at", "decided_at",
            "valid_until", "consumed_at", "audit_id",
        ]

    def get_url(self, review):
        """Absolute, as agents are told it: under AIRLOCK_DASHBOARD_URL, else the address the API was asked at."""
        request = self.context.get("request")
        return review_url(review.pk, request.build_absolute_uri("/") if request is not None else "")

    def get_approvals(self, review):
        return sum(1 for vote in review.votes.all() if vote.approve)

    def get_window_refusal(self, review):
        """Why "window" would be refused ("" when it is possible)."""
        return reviews.window_refusal(review)


class ReviewDetailSerializer(ReviewSerializer):
    votes = serializers.SerializerMethodField()
    events = serializers.SerializerMethodField()

    class Meta(ReviewSerializer.Meta):
        fields = ReviewSerializer.Meta.fields + [
            "body", "preview_state", "preview_summary", "preview_diff", "preview_error", "votes", "events",
        ]

    def get_votes(self, review):
        return [
            {"reviewer": v.reviewer_name, "approve": v.approve, "scope": v.scope, "window_seconds": v.window_seconds,
             "unmask": v.unmask, "release_token": v.release_token, "reason": v.reason, "at": v.created_at}
            for v in review.votes.all()
        ]

    def get_events(self, review):
        return [{"kind": e.kind, "actor": e.actor, "reason": e.reason, "details": e.details, "at": e.at}
                for e in review.events.all()]


class LeaseSerializer(serializers.ModelSerializer):
    events = serializers.SerializerMethodField()

    class Meta:
        model = Lease
        fields = [
            "id", "state", "connection", "subject", "group", "issuer", "rules", "duration_seconds", "reason",
            "requested_by", "requested_at", "granted_by", "granted_at", "starts_at", "expires_at",
            "decided_reason", "revoked_by", "revoked_at", "ended_at", "events",
        ]

    def get_events(self, lease):
        return [{"kind": e.kind, "actor": e.actor, "reason": e.reason, "at": e.at} for e in lease.events.all()]


class DecisionInput(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=reviews.MAX_REASON, trim_whitespace=True)
    scope = serializers.ChoiceField(choices=["once", "window"], required=False, default="once")
    window_seconds = serializers.IntegerField(required=False, allow_null=True)
    unmask = serializers.BooleanField(required=False, default=False)
    release_token = serializers.BooleanField(required=False, default=False)


class LeaseInput(serializers.Serializer):
    connection = serializers.CharField(max_length=63)
    subject = serializers.CharField(required=False, allow_blank=True, default="")
    group = serializers.CharField(required=False, allow_blank=True, default="")
    issuer = serializers.CharField(required=False, allow_blank=True, default="")
    rules = serializers.ListField(child=serializers.CharField(max_length=63), required=False, default=list,
                                  max_length=100)
    duration = serializers.CharField(max_length=32)
    reason = serializers.CharField(max_length=reviews.MAX_REASON)


class ReasonInput(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=reviews.MAX_REASON)


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise ValidationError(serializer.errors)
    return serializer.validated_data


def _error(exc: reviews.ApprovalError) -> Response:
    return Response({"detail": exc.message}, status=exc.status)


class ApprovalsAPIView(APIView):
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    required_any: tuple[str, ...] = ()

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if self.required_any and not any(request.user.has_perm(p) for p in self.required_any):
            raise PermissionDenied("you do not have the reviewer role")


REVIEW_READERS = ("approvals.view_review", "approvals.decide_review")
LEASE_READERS = ("approvals.view_lease", "approvals.grant_lease", "approvals.request_lease")


class ReviewList(ApprovalsAPIView):
    required_any = REVIEW_READERS

    def get(self, request):
        state = request.query_params.get("state", ReviewState.PENDING)
        if state not in ReviewState.values and state != "all":
            raise ValidationError({"state": f"one of {', '.join(ReviewState.values)} or all"})
        rows = Review.objects.prefetch_related("votes")
        if state != "all":
            rows = rows.filter(state=state)
        return Response(ReviewSerializer(rows[:MAX_LIST], many=True, context={"request": request}).data)


class ReviewDetail(ApprovalsAPIView):
    required_any = REVIEW_READERS

    def get(self, request, review_id):
        review = Review.objects.prefetch_related("votes", "events").filter(pk=review_id).first()
        if review is None:
            return Response({"detail": f"review {review_id} not found"}, status=404)
        return Response(ReviewDetailSerializer(review, context={"request": request}).data)


class ReviewDecision(ApprovalsAPIView):
    approve = True

    def post(self, request, review_id):
        data = _valid(DecisionInput, request.data)
        try:
            review = reviews.decide(
                review_id, request.user, approve=self.approve, reason=data.get("reason", ""),
                scope=data["scope"], window_seconds=data.get("window_seconds"), unmask=data["unmask"],
                release_token=data["release_token"],
            )
        except reviews.ApprovalError as exc:
            return _error(exc)
        return Response(ReviewSerializer(review, context={"request": request}).data)


class LeaseList(ApprovalsAPIView):
    required_any = LEASE_READERS

    def get(self, request):
        rows = Lease.objects.prefetch_related("events")
        state = request.query_params.get("state")
        if state is not None:
            if state not in LeaseState.values:
                raise ValidationError({"state": f"one of {', '.join(LeaseState.values)}"})
            rows = rows.filter(state=state)
        return Response(LeaseSerializer(rows[:MAX_LIST], many=True).data)

    def post(self, request):
        if not request.user.has_perm("approvals.request_lease") and not request.user.has_perm("approvals.grant_lease"):
            raise PermissionDenied("you may not request leases")
        data = _valid(LeaseInput, request.data)
        try:
            lease = leases.request_lease(**data, requested_by=request.user.get_username())
        except reviews.ApprovalError as exc:
            return _error(exc)
        return Response(LeaseSerializer(lease).data, status=status.HTTP_201_CREATED)


class LeaseAction(ApprovalsAPIView):
    action = "grant"

    def post(self, request, lease_id):
        reason = _valid(ReasonInput, request.data)["reason"]
        try:
            if self.action == "revoke":
                lease = leases.revoke(lease_id, request.user, reason=reason)
            else:
                lease = leases.decide(lease_id, request.user, grant=self.action == "grant", reason=reason)
        except reviews.ApprovalError as exc:
            return _error(exc)
        return Response(LeaseSerializer(lease).data)


urlpatterns = [
    path("reviews/", ReviewList.as_view(), name="api-reviews"),
    path("reviews/<int:review_id>/", ReviewDetail.as_view(), name="api-review"),
    path("reviews/<int:review_id>/approve/", ReviewDecision.as_view(approve=True), name="api-review-approve"),
    path("reviews/<int:review_id>/deny/", ReviewDecision.as_view(approve=False), name="api-review-deny"),
    path("leases/", LeaseList.as_view(), name="api-leases"),
    path("leases/<int:lease_id>/grant/", LeaseAction.as_view(action="grant"), name="api-lease-grant"),
    path("leases/<int:lease_id>/deny/", LeaseAction.as_view(action="deny"), name="api-lease-deny"),
    path("leases/<int:lease_id>/revoke/", LeaseAction.as_view(action="revoke"), name="api-lease-revoke"),
]
