"""Lease logic (synchronous): request, grant, deny, revoke, expire.

Every change appends a LeaseEvent, and on commit tells the gateways
(approvals.broadcast.LEASES_GROUP: drop cached leases; for revoked or expired
ones, cut the live sessions bound to them) and queues notifications.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals import broadcast, history, notify
from approvals.identities import is_same_person
from approvals.models import Lease, LeaseEventKind, LeaseState
from approvals.reviews import ApprovalError, clean_reason
from connections.models import Connection
from policy.models import Rule

# ASCII digits only ("²" and other Unicode digits are not numbers here), bounded length.
_SECONDS = re.compile(r"[0-9]{1,9}")
_DURATION = re.compile(r"(?:([0-9]{1,5})h)?(?:([0-9]{1,7})m)?(?:([0-9]{1,9})s)?")
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]+$")
MIN_SECONDS = 60
DURATION_HELP = 'duration must be whole seconds or like "30m", "2h", "1h30m"'


def parse_duration(value) -> int:
    """Seconds from ``90``, ``"90"``, ``"15m"``, ``"1h30m"``; ApprovalError(400) for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ApprovalError(400, DURATION_HELP)
    if isinstance(value, int):
        seconds = value
    elif _SECONDS.fullmatch(value):
        seconds = int(value)
    elif value and (match := _DURATION.fullmatch(value)):
        hours, minutes, secs = (int(g or 0) for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ApprovalError(400, DURATION_HELP)
    maximum = int(settings.AIRLOCK_LEASE_MAX_SECONDS)
    if not MIN_SECONDS <= seconds <= maximum:
        raise ApprovalError(400, f"duration must be between {MIN_SECONDS} and {maximum} seconds")
    return seconds


def _identity(value, what: str) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > 253 or not _PRINTABLE.match(value):
        raise ApprovalError(400, f"{what} must be a printable string of at most 253 characters")
    return value


def request_lease(*, connection: str, subject: str = "", group: str = "", issuer: str = "", rules=(),
                  duration, reason: str, requested_by: str) -> Lease:
    subject, group = _identity(subject, "subject"), _identity(group, "group")
    issuer = _identity(issuer, "issuer")
    if bool(subject) == bool(group):
        raise ApprovalError(400, "a lease is for exactly one of: a subject, a group")
    seconds = parse_duration(duration)
    reason = clean_reason(reason)
    if not reason:
        raise ApprovalError(400, "a lease request needs a reason")
    if not isinstance(connection, str) or not Connection.objects.filter(name=connection).exists():
        raise ApprovalError(400, f"connection {json.dumps(str(connection)[:63])} does not exist")
    if isinstance(rules, str) or not isinstance(rules, (list, tuple)) or not all(isinstance(r, str) for r in rules):
        raise ApprovalError(400, "rules must be a list of rule names")
    known = set(Rule.objects.filter(connection__name=connection, name__in=list(rules)).values_list("name", flat=True))
    unknown = sorted(set(rules) - known)
    if unknown:
        raise ApprovalError(400, f"connection {connection} has no rule named " + ", ".join(unknown[:5]))
    with transaction.atomic():
        lease = Lease.objects.create(
            connection=connection, subject=subject, group=group, issuer=issuer, rules=sorted(set(rules)),
            duration_seconds=seconds, reason=reason, requested_by=requested_by,
        )
        history.lease_event(lease, LeaseEventKind.REQUESTED, actor=requested_by, reason=reason,
                            details={"duration_seconds": seconds})
        broadcast.lease_changed(lease.pk, lease.connection, lease.state)
        notify.lease_changed(lease.pk)
    return lease


def _locked(lease_id: int) -> Lease:
    lease = Lease.objects.select_for_update().filter(pk=lease_id).first()
    if lease is None:
        raise ApprovalError(404, f"lease {lease_id} not found")
    return lease


def can_grant(user, lease: Lease) -> tuple[bool, str]:
    if not (user.is_authenticated and user.is_active and user.has_perm("approvals.grant_lease")):
        return False, "you may not grant or revoke leases"
    if lease.requested_by == user.get_username() or (lease.subject and is_same_person(user, lease.subject, lease.subject)):
        return False, "nobody may grant a lease to themselves"
    return True, ""


def decide(lease_id: int, user, *, grant: bool, reason: str = "") -> Lease:
    reason = clean_reason(reason)
    if not grant and not reason:
        raise ApprovalError(400, "a denial needs a reason")
    with transaction.atomic():
        lease = _locked(lease_id)
        if lease.state != LeaseState.REQUESTED:
            raise ApprovalError(409, f"lease {lease.pk} is already {lease.state}")
        allowed, why = can_grant(user, lease)
        if not allowed:
            raise ApprovalError(403, why)
        now = timezone.now()
        lease.decided_reason = reason
        lease.granted_by = user.get_username()
        lease.granted_at = now
        if grant:
            lease.state = LeaseState.GRANTED
            lease.starts_at = now
            lease.expires_at = now + timedelta(seconds=lease.duration_seconds)
        else:
            lease.state = LeaseState.DENIED
            lease.ended_at = now
        lease.save()
        kind = LeaseEventKind.GRANTED if grant else LeaseEventKind.DENIED
        history.lease_event(lease, kind, actor=lease.granted_by, reason=reason)
        broadcast.lease_changed(lease.pk, lease.connection, lease.state)
        notify.lease_changed(lease.pk)
    return lease


def revoke(lease_id: int, user, *, reason: str) -> Lease:
    """End a lease now: gateways refuse it from the next request and cut its live sessions."""
    reason = clean_reason(reason)
    if not reason:
        raise ApprovalError(400, "a revocation needs a reason")
    with transaction.atomic():
        lease = _locked(lease_id)
        if not (user.is_authenticated and user.is_active and user.has_perm("approvals.grant_lease")):
            raise ApprovalError(403, "you may not grant or revoke leases")
        now = timezone.now()
        if lease.state == LeaseState.GRANTED and lease.expires_at <= now:
            _expire(lease, now)
            raise ApprovalError(409, f"lease {lease.pk} had already expired")
        if lease.state not in (LeaseState.REQUESTED, LeaseState.GRANTED):
            raise ApprovalError(409, f"lease {lease.pk} is already {lease.state}")
        lease.state = LeaseState.REVOKED
        lease.revoked_by = user.get_username()
        lease.revoked_at = lease.ended_at = now
        lease.decided_reason = reason
        lease.save()
        history.lease_event(lease, LeaseEventKind.REVOKED, actor=lease.revoked_by, reason=reason)
        broadcast.lease_changed(lease.pk, lease.connection, lease.state, f"lease {lease.pk} was revoked: {reason}")
        notify.lease_changed(lease.pk)
    return lease


def _expire(lease: Lease, now) -> None:
    lease.state = LeaseState.EXPIRED
    lease.ended_at = now
    lease.save(update_fields=["state", "ended_at"])
    history.lease_event(lease, LeaseEventKind.EXPIRED, actor="airlock")
    broadcast.lease_changed(lease.pk, lease.connection, lease.state, f"lease {lease.pk} expired")
    notify.lease_changed(lease.pk)


def expire_due(now=None) -> list[int]:
    """Sweep: mark granted leases past their expiry as expired (each broadcast cuts its live sessions)."""
    now = now or timezone.now()
    expired = []
    for pk in Lease.objects.filter(state=LeaseState.GRANTED, expires_at__lte=now).values_list("pk", flat=True):
        with transaction.atomic():
            lease = Lease.objects.select_for_update().filter(pk=pk, state=LeaseState.GRANTED).first()
            if lease is not None and lease.expires_at <= now:
                _expire(lease, now)
                expired.append(pk)
    return expired
