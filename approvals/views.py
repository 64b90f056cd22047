"""The reviewer dashboard: a live pending queue, request detail with a dry-run preview, decisions, leases.

Plain Django views and forms (CSRF-protected POSTs that work without
JavaScript); htmx adds live updates over the ``/ws/approvals/`` WebSocket
(approvals.consumers) and loads the dry-run preview after the page.
"""

import logging
from urllib.parse import unquote_plus

from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from approvals import leases, reviews
from approvals.auth import oidc_enabled
from approvals.models import Lease, LeaseState, Review, ReviewState, Scope
from kube.vocabulary import MUTATING_VERBS

log = logging.getLogger(__name__)

REVIEW_READERS = ("approvals.view_review", "approvals.decide_review")
LEASE_READERS = ("approvals.view_lease", "approvals.grant_lease")


def _require(user, permissions) -> None:
    if not (user.is_active and any(user.has_perm(p) for p in permissions)):
        raise PermissionDenied("the reviewer role is needed for the approvals dashboard")


class LoginView(auth_views.LoginView):
    template_name = "approvals/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["oidc_enabled"] = oidc_enabled()
        context["sso_failed"] = self.request.GET.get("sso") == "failed"
        return context


def pending_context() -> dict:
    pending = list(Review.objects.filter(state=ReviewState.PENDING).prefetch_related("votes")[:200])
    for review in pending:
        review.approval_count = sum(1 for vote in review.votes.all() if vote.approve)
    return {"pending": pending}


@login_required
def queue(request):
    _require(request.user, REVIEW_READERS)
    context = pending_context()
    context["decided"] = Review.objects.exclude(state=ReviewState.PENDING).order_by("-decided_at", "-id")[:20]
    return render(request, "approvals/queue.html", context)


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("deny", "Deny")])
    reason = forms.CharField(required=False, max_length=reviews.MAX_REASON, widget=forms.Textarea(attrs={"rows": 2}))
    scope = forms.ChoiceField(choices=Scope.choices, initial="once", required=False)
    window_minutes = forms.IntegerField(required=False, min_value=1, initial=15)
    unmask = forms.BooleanField(required=False, label="Show secret values in the response")
    token = forms.ChoiceField(
        choices=[("withhold", "Withhold the token: the request is not sent to the cluster, no token is minted, "
                              "and the agent is told so"),
                 ("release", "Give the agent the token (the audit trail keeps it masked)")],
        initial="withhold", required=False, widget=forms.RadioSelect,
    )


def query_parameters(query: str) -> list[tuple[str, str]]:
    """The stored (masked) query's parameters, decoded, in the order the cluster reads them."""
    return [(unquote_plus(name), unquote_plus(value))
            for name, _, value in (pair.partition("=") for pair in query.split("&") if pair)]


def review_context(review: Review, user) -> dict:
    allowed, why = reviews.can_decide(user, review)
    votes = list(review.votes.all())
    return {
        "review": review,
        "query_parameters": query_parameters(review.query),
        "window_refusal": reviews.window_refusal(review),
        "votes": votes,
        "approval_count": sum(1 for v in votes if v.approve),
        "events": list(review.events.all()),
        "can_decide": allowed and review.state == ReviewState.PENDING,
        "cannot_decide_because": why,
        "is_write": review.verb in MUTATING_VERBS,
    }


@login_required
def detail(request, review_id):
    _require(request.user, REVIEW_READERS)
    review = get_object_or_404(Review, pk=review_id)
    context = review_context(review, request.user)
    context["form"] = DecisionForm()
    return render(request, "approvals/detail.html", context)


@require_POST
@login_required
def decide(request, review_id):
    _require(request.user, REVIEW_READERS)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The decision form is invalid: " + "; ".join(
            f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()))
        return redirect("approvals:detail", review_id=review_id)
    data = form.cleaned_data
    scope = data["scope"] or "once"
    window = data["window_minutes"] * 60 if scope == "window" and data["window_minutes"] else None
    try:
        review = reviews.decide(
            review_id, request.user, approve=data["decision"] == "approve", reason=data["reason"],
            scope=scope, window_seconds=window, unmask=data["unmask"], release_token=data["token"] == "release",
        )
    except reviews.ApprovalError as exc:
        if exc.status == 404:
            raise Http404(exc.message) from None
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Review {review.pk}: your decision is recorded ({review.state}).")
    return redirect("approvals:detail", review_id=review_id)


class LeaseActionForm(forms.Form):
    action = forms.ChoiceField(choices=[("grant", "Grant"), ("deny", "Deny"), ("revoke", "Revoke")])
    reason = forms.CharField(required=False, max_length=reviews.MAX_REASON)


def leases_context() -> dict:
    active = LeaseState.REQUESTED, LeaseState.GRANTED
    return {
        "open_leases": Lease.objects.filter(state__in=active).order_by("state", "-requested_at")[:200],
        "closed_leases": Lease.objects.exclude(state__in=active).order_by("-ended_at", "-id")[:20],
    }


@login_required
def lease_list(request):
    _require(request.user, LEASE_READERS)
    return render(request, "approvals/leases.html", leases_context())


@require_POST
@login_required
def lease_action(request, lease_id):
    _require(request.user, LEASE_READERS)
    form = LeaseActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The lease form is invalid.")
        return redirect("approvals:leases")
    action, reason = form.cleaned_data["action"], form.cleaned_data["reason"]
    try:
        if action == "revoke":
            lease = leases.revoke(lease_id, request.user, reason=reason)
        else:
            lease = leases.decide(lease_id, request.user, grant=action == "grant", reason=reason)
    except reviews.ApprovalError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Lease {lease.pk} is now {lease.state}.")
    return redirect(reverse("approvals:leases"))
