"""Review logic (synchronous, one transaction per step): open, settle, decide, expire.

The gateway calls :func:`open_review` and :func:`settle` through
``database_sync_to_async`` (approvals.hold); the API, dashboard and Celery
call :func:`decide` and :func:`expire_stale`.  Each state change appends a
ReviewEvent, and on commit wakes held requests and dashboards
(approvals.broadcast) and queues webhook notifications.

Long because each step (open, settle, decide, expire) is one transaction whose state rules must be
read together: splitting them would split the state machine.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals import broadcast, history, notify
from approvals.fingerprint import body_digest, identify
from approvals.identities import is_same_person, reviewer_groups_of
from approvals.models import BodyState, PreviewState, Review, ReviewEventKind, ReviewState, ReviewVote, Scope
from kube.media import declared_content_type
from masking.detectors import Detectors
from masking.queries import masked_query
from masking.writes import mask_request_body_for_record
from policy.messages import describe_request
from policy.models import Rule

log = logging.getLogger(__name__)

MAX_STORED_BODY = 256 * 1024
MAX_REASON = 2000


class ApprovalError(Exception):
    """A refused review or lease action; ``message`` is safe to show."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class HeldRequest:
    """What a review needs from a GatewayRequest, detached from it (crosses into a worker thread)."""

    connection: str
    principal: object
    info: object
    method: str
    transport: str
    path: str  # percent-encoded, exactly as forwarded
    query: str  # raw, exactly as forwarded
    target: str  # path and query as forwarded (GatewayRequest.target)
    headers: tuple[tuple[str, str], ...]  # the forwarded effect headers (approvals.fingerprint.EFFECT_HEADERS)
    body: bytes | None
    audit_id: str
    rule_id: int | None
    rule_name: str
    description: str
    dry_run_note: str = ""  # the request asks for a dry run that is not one (kube.dryrun)
    origin: str = ""  # who sent it from inside Airlock on the agent's behalf ("mcp: delete"), shown to reviewers

    @property
    def content_type(self) -> str:
        return declared_content_type(self.headers)


@dataclass(frozen=True)
class Settlement:
    """A review's answer for one held request."""

    approved: bool
    state: str  # approved | denied | expired | used (recent_stream_review: pending)
    review_id: int
    reviewers: tuple[str, ...] = ()
    reason: str = ""
    unmask: bool = False
    release_token: bool = False
    scope: str = Scope.ONCE
    details: dict = field(default_factory=dict)


def stored_body(info, content_type: str, body: bytes | None) -> tuple[str, str]:
    """(text, BodyState) kept for reviewers: masked like the audit trail's copy (masking), bounded."""
    if body is None:
        return "", BodyState.UNKNOWN
    if not body:
        return "", BodyState.NONE
    if len(body) > MAX_STORED_BODY:
        return "", BodyState.WITHHELD
    masked = mask_request_body_for_record(info, content_type, body)
    try:
        text = masked.decode("utf-8")
    except UnicodeDecodeError:
        return "", BodyState.WITHHELD
    if "\x00" in text:
        return "", BodyState.WITHHELD
    try:
        text = json.dumps(json.loads(text), indent=2, sort_keys=True)
    except ValueError:
        pass
    return text, BodyState.STORED


def stored_query(query: str) -> str:
    """The raw query as reviewers see it: in order, as sent, with its values masked like the audit
    trail's request URI (masking.queries.masked_query, default detectors); a parameter masking
    leaves alone keeps its exact spelling."""
    return masked_query(query, Detectors.default())


def _rule_settings(rule_id: int | None) -> tuple[int, list[str]]:
    row = Rule.objects.filter(pk=rule_id).only("min_approvals", "reviewer_groups").first() if rule_id else None
    if row is None:
        return 1, []
    return max(1, int(row.min_approvals)), [g for g in row.reviewer_groups if isinstance(g, str)]


def _expire_if_stale(review: Review, now) -> bool:
    """Lazily expire a pending review past its lifetime or an unused approval past its validity."""
    stale = (
        review.state == ReviewState.PENDING
        and review.created_at + timedelta(seconds=settings.AIRLOCK_REVIEW_PENDING_SECONDS) <= now
    ) or (
        review.state == ReviewState.APPROVED
        and review.scope == Scope.ONCE
        and review.consumed_at is None
        and review.valid_until is not None
        and review.valid_until <= now
    )
    if not stale:
        return False
    _expire(review, "nobody decided in time" if review.state == ReviewState.PENDING
            else "the approval was not used in time")
    return True


def _expire(review: Review, why: str) -> None:
    review.state = ReviewState.EXPIRED
    review.save(update_fields=["state"])
    history.review_event(review, ReviewEventKind.EXPIRED, actor="airlock", reason=why)
    broadcast.review_changed(review.pk, review.state)
    notify.review_decided(review.pk)


def _approved_settlement(review: Review) -> Settlement:
    return Settlement(
        approved=True, state="approved", review_id=review.pk, reviewers=tuple(_approvers(review)),
        reason=review.reason, unmask=review.unmask, release_token=review.release_token, scope=review.scope,
    )


def _approvers(review: Review) -> list[str]:
    return [vote.reviewer_name for vote in review.votes.all() if vote.approve]


def _consume(review: Review, now) -> bool:
    """Atomically use a "once" approval; False when another request already did."""
    used = Review.objects.filter(pk=review.pk, state=ReviewState.APPROVED, consumed_at__isnull=True).update(
        consumed_at=now
    )
    if used:
        review.consumed_at = now
        history.review_event(review, ReviewEventKind.USED, actor="airlock")
        broadcast.review_changed(review.pk, review.state)
    return bool(used)


def proxy_fields(principal) -> dict:
    """Who acted through whom: the trusted proxy that asserted the principal, if one did."""
    proxy = getattr(principal, "proxy", None)
    if proxy is None:
        return {}
    return {"proxy_username": proxy.username, "proxy_subject": proxy.subject, "proxy_issuer": proxy.issuer}


@transaction.atomic
def open_review(held: HeldRequest) -> tuple[Review, Settlement | None]:
    """Match the request to an approval, a pending review, or open a new review.

    Returns the review and, when an earlier approval already covers the
    request, its settlement (the hold ends at once).
    """
    now = timezone.now()
    principal, info = held.principal, held.info
    identity = identify(held)

    window = None
    if identity.window:
        window = Review.objects.filter(
            window_key=identity.window, state=ReviewState.APPROVED, scope=Scope.WINDOW, valid_until__gt=now
        ).order_by("-valid_until").first()
    if window is not None:
        return window, _approved_settlement(window)

    for candidate in Review.objects.filter(
        exact=identity.exact, state__in=[ReviewState.APPROVED, ReviewState.PENDING]
    ).order_by("-created_at", "-id"):
        if _expire_if_stale(candidate, now):
            continue
        if candidate.state == ReviewState.APPROVED:
            if candidate.scope == Scope.ONCE and candidate.consumed_at is None and _consume(candidate, now):
                return candidate, _approved_settlement(candidate)
            continue
        history.review_event(candidate, ReviewEventKind.RETRIED, actor=principal.username,
                             details={"audit_id": held.audit_id})
        return candidate, None

    min_approvals, reviewer_groups = _rule_settings(held.rule_id)
    text, body_state = stored_body(info, held.content_type, held.body)
    description = held.description
    if identity.name != info.name:
        description = describe_request(replace(info, name=identity.name))
    review = Review.objects.create(
        connection=held.connection,
        rule_id=held.rule_id,
        rule_name=held.rule_name,
        principal_subject=principal.subject,
        principal_username=principal.username,
        principal_issuer=principal.issuer,
        principal_groups=list(principal.groups),
        **proxy_fields(principal),
        method=held.method,
        transport=held.transport,
        verb=info.verb,
        api_group=info.api_group,
        api_version=info.api_version,
        resource=info.resource,
        subresource=info.subresource,
        namespace=info.namespace,
        name=identity.name,
        path=held.path,
        query=stored_query(held.query),
        headers=[list(pair) for pair in held.headers],
        description=description,
        dry_run_note=held.dry_run_note,
        origin=held.origin,
        body=text,
        body_state=body_state,
        body_sha256="" if held.body is None else body_digest(held.body),
        window_key=identity.window,
        exact=identity.exact,
        audit_id=held.audit_id,
        min_approvals=min_approvals,
        reviewer_groups=reviewer_groups,
    )
    history.review_event(review, ReviewEventKind.REQUESTED, actor=principal.username,
                         details={"audit_id": held.audit_id})
    broadcast.review_changed(review.pk, review.state)
    notify.review_requested(review.pk)
    return review, None


@transaction.atomic
def settle(review_id: int) -> Settlement | None:
    """The answer for a request held on this review, or None while it is still pending."""
    now = timezone.now()
    review = Review.objects.filter(pk=review_id).first()
    if review is None:
        return Settlement(approved=False, state="expired", review_id=review_id, reason="the review no longer exists")
    _expire_if_stale(review, now)
    if review.state == ReviewState.PENDING:
        return None
    if review.state == ReviewState.DENIED:
        deniers = tuple(v.reviewer_name for v in review.votes.all() if not v.approve)
        return Settlement(approved=False, state="denied", review_id=review.pk, reviewers=deniers, reason=review.reason)
    if review.state == ReviewState.EXPIRED:
        return Settlement(approved=False, state="expired", review_id=review.pk)
    if review.scope == Scope.WINDOW:
        if review.valid_until and review.valid_until > now:
            return _approved_settlement(review)
        return Settlement(approved=False, state="expired", review_id=review.pk)
    if _consume(review, now):
        return _approved_settlement(review)
    return Settlement(approved=False, state="used", review_id=review.pk)


STREAM_FALLBACK_SECONDS = 60


def recent_stream_review(connection: str, principal, info, path: str) -> Settlement | None:
    """The agent's newest pending or denied review of this exec, attach or port-forward over a
    WebSocket, opened in the last minute, as the request was told (no approval is used).

    kubectl retries a refused WebSocket as SPDY, which the gateway never relays, and prints
    only the SPDY answer; that answer then names the review its WebSocket attempt got.
    """
    since = timezone.now() - timedelta(seconds=STREAM_FALLBACK_SECONDS)
    review = Review.objects.filter(
        connection=connection, principal_issuer=principal.issuer, principal_subject=principal.subject,
        transport="websocket", api_group=info.api_group, resource=info.resource, subresource=info.subresource,
        namespace=info.namespace, name=info.name, path=path, created_at__gte=since,
        state__in=[ReviewState.PENDING, ReviewState.DENIED],
    ).order_by("-created_at", "-id").first()
    if review is None:
        return None
    if review.state == ReviewState.DENIED:
        deniers = tuple(v.reviewer_name for v in review.votes.all() if not v.approve)
        return Settlement(approved=False, state="denied", review_id=review.pk, reviewers=deniers, reason=review.reason)
    return Settlement(approved=False, state="pending", review_id=review.pk,
                      details={"rule_name": review.rule_name, "description": review.description})


@transaction.atomic
def record_timeout(review_id: int, audit_id: str) -> None:
    review = Review.objects.filter(pk=review_id).first()
    if review is not None:
        history.review_event(review, ReviewEventKind.TIMED_OUT, actor="airlock", details={"audit_id": audit_id})


def claim_preview(review_id: int) -> bool:
    """True for exactly one caller: the one that should run this review's dry run."""
    return bool(Review.objects.filter(pk=review_id, preview_state=PreviewState.NONE).update(
        preview_state=PreviewState.PENDING
    ))


def save_preview(review_id: int, summary: str, diff: str, error: str) -> None:
    Review.objects.filter(pk=review_id).update(
        preview_state=PreviewState.DONE, preview_summary=summary, preview_diff=diff, preview_error=error
    )
    state = Review.objects.filter(pk=review_id).values_list("state", flat=True).first()
    if state is not None:
        broadcast.review_changed(review_id, state)


def can_decide(user, review: Review) -> tuple[bool, str]:
    """May this user vote on this review?  (False, why) otherwise."""
    if not (user.is_authenticated and user.is_active and user.has_perm("approvals.decide_review")):
        return False, "you do not have the reviewer role"
    if is_same_person(user, review.principal_subject, review.principal_username):
        return False, "nobody may approve or deny their own request"
    if review.reviewer_groups and not set(review.reviewer_groups) & reviewer_groups_of(user):
        return False, "rule " + json.dumps(review.rule_name) + " needs a reviewer from: " + ", ".join(
            review.reviewer_groups
        )
    return True, ""


def clean_reason(reason) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise ApprovalError(400, "reason must be a string")
    reason = reason.replace("\x00", "").strip()
    if len(reason) > MAX_REASON:
        raise ApprovalError(400, f"reason must be at most {MAX_REASON} characters")
    return reason


def window_refusal(review: Review) -> str:
    """Why this review cannot be approved for a time window ("" when it can)."""
    if review.window_key:
        return ""
    if review.verb == "create":
        return ("the create has no fixed metadata.name (generateName, or a body the gateway cannot read), "
                "so a window would cover creating any object")
    if review.verb == "deletecollection":
        return "it deletes every object its query selects, so a window would cover deleting any selection"
    return "it names no single object"


def _window(scope: str, window_seconds) -> int | None:
    if scope == Scope.ONCE:
        return None
    if scope != Scope.WINDOW:
        raise ApprovalError(400, 'scope must be "once" or "window"')
    if window_seconds in (None, ""):
        window_seconds = settings.AIRLOCK_REVIEW_DEFAULT_WINDOW_SECONDS
    try:
        window_seconds = int(window_seconds)
    except (TypeError, ValueError):
        raise ApprovalError(400, "window_seconds must be a whole number of seconds") from None
    maximum = int(settings.AIRLOCK_REVIEW_MAX_WINDOW_SECONDS)
    if not 60 <= window_seconds <= maximum:
        raise ApprovalError(400, f"window_seconds must be between 60 and {maximum}")
    return window_seconds


def token_choice_refusal(review: Review, *, unmask: bool, release_token: bool) -> str:
    """Why these choices do not fit the review ("" when they do).

    A ServiceAccount token request has one choice, ``release_token``: the token is masked in the
    audit trail either way, and ``unmask`` would say nothing more.  Other requests have no token.
    """
    if review.is_token_request and unmask:
        return "for a ServiceAccount token request choose release_token (whether the agent receives the token)"
    if not review.is_token_request and release_token:
        return "release_token applies only to a ServiceAccount token request (create serviceaccounts/token)"
    return ""


def decide(review_id: int, user, *, approve: bool, reason: str = "", scope: str = Scope.ONCE,
           window_seconds=None, unmask: bool = False, release_token: bool = False) -> Review:
    """Record one reviewer's vote; the review is decided by a denial or by ``min_approvals`` approvals.

    The dashboard, the REST API and ``manage.py review`` all decide through here.
    """
    reason = clean_reason(reason)
    window = _window(scope, window_seconds) if approve else None
    if not approve and not reason:
        raise ApprovalError(400, "a denial needs a reason (the agent sees it)")
    with transaction.atomic():
        review = Review.objects.select_for_update().filter(pk=review_id).first()
        if review is None:
            raise ApprovalError(404, f"review {review_id} not found")
        now = timezone.now()
        _expire_if_stale(review, now)
        if review.state != ReviewState.PENDING:
            raise ApprovalError(409, f"review {review.pk} is already {review.state}")
        allowed, why = can_decide(user, review)
        if not allowed:
            raise ApprovalError(403, why)
        if window is not None and (refusal := window_refusal(review)):
            raise ApprovalError(400, f"review {review.pk} cannot be approved for a time window: {refusal}; "
                                     "approve it once (exactly this request)")
        if approve and (refusal := token_choice_refusal(review, unmask=bool(unmask),
                                                        release_token=bool(release_token))):
            raise ApprovalError(400, f"review {review.pk}: {refusal}")
        if review.votes.filter(reviewer=user).exists():
            raise ApprovalError(409, f"you already voted on review {review.pk}")
        name = user.get_username()
        ReviewVote.objects.create(
            review=review, reviewer=user, reviewer_name=name, approve=approve,
            scope=scope if approve else Scope.ONCE, window_seconds=window, unmask=bool(unmask) and approve,
            release_token=bool(release_token) and approve, reason=reason,
        )
        if not approve:
            review.state = ReviewState.DENIED
            review.reason = reason
            review.decided_by = name
            review.decided_at = now
            review.save(update_fields=["state", "reason", "decided_by", "decided_at"])
            history.review_event(review, ReviewEventKind.DENIED, actor=name, reason=reason)
        else:
            approvals = [v for v in review.votes.all() if v.approve]
            if len(approvals) < review.min_approvals:
                history.review_event(
                    review, ReviewEventKind.APPROVAL, actor=name, reason=reason,
                    details={"approvals": len(approvals), "needed": review.min_approvals},
                )
            else:
                _approve(review, approvals, name, reason, now)
        broadcast.review_changed(review.pk, review.state)
        if review.state != ReviewState.PENDING:
            notify.review_decided(review.pk)
    return review


def _approve(review: Review, approvals: list[ReviewVote], name: str, reason: str, now) -> None:
    """The most restrictive choice of all approvers wins: a window only if all chose one, the shortest."""
    windows = [v.window_seconds for v in approvals]
    if all(v.scope == Scope.WINDOW for v in approvals):
        review.scope = Scope.WINDOW
        review.valid_until = now + timedelta(seconds=min(windows))
    else:
        review.scope = Scope.ONCE
        review.valid_until = now + timedelta(seconds=settings.AIRLOCK_REVIEW_APPROVAL_SECONDS)
    review.unmask = all(v.unmask for v in approvals)
    review.release_token = all(v.release_token for v in approvals)
    review.state = ReviewState.APPROVED
    review.reason = reason
    review.decided_by = ", ".join(v.reviewer_name for v in approvals)
    review.decided_at = now
    review.save(update_fields=["scope", "valid_until", "unmask", "release_token", "state", "reason", "decided_by",
                               "decided_at"])
    details = {"scope": review.scope, "valid_until": review.valid_until.isoformat(), "unmask": review.unmask,
               "approvers": [v.reviewer_name for v in approvals]}
    if review.is_token_request:
        details["release_token"] = review.release_token
    history.review_event(review, ReviewEventKind.APPROVED, actor=name, reason=reason, details=details)


def expire_stale(now=None) -> int:
    """Sweep: expire pending reviews past their lifetime and unused approvals past their validity."""
    now = now or timezone.now()
    pending_cutoff = now - timedelta(seconds=settings.AIRLOCK_REVIEW_PENDING_SECONDS)
    candidates = list(
        Review.objects.filter(state=ReviewState.PENDING, created_at__lte=pending_cutoff).values_list("pk", flat=True)
    ) + list(
        Review.objects.filter(
            state=ReviewState.APPROVED, scope=Scope.ONCE, consumed_at__isnull=True, valid_until__lte=now
        ).values_list("pk", flat=True)
    )
    expired = 0
    for pk in candidates:
        with transaction.atomic():
            review = Review.objects.select_for_update().filter(pk=pk).first()
            if review is not None and _expire_if_stale(review, now):
                expired += 1
    return expired


def expire_pending(why: str) -> int:
    """Expire every pending review now, saying ``why`` (the demo's fresh start: its cluster and identity
    provider are new, so nothing held by an earlier run can be released)."""
    expired = 0
    for pk in Review.objects.filter(state=ReviewState.PENDING).values_list("pk", flat=True):
        with transaction.atomic():
            review = Review.objects.select_for_update().filter(pk=pk, state=ReviewState.PENDING).first()
            if review is not None:
                _expire(review, why)
                expired += 1
    return expired
