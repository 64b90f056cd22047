"""Replay of the audit trail in the browser: sessions, their request timelines, exec recordings.

Read-only pages for signed-in people holding ``audit.view_auditevent`` (auditors; superusers
have it).  Everything shown was masked before it was stored, but agents choose URIs, names and
bodies, so templates escape everything, bodies are fetched as ``text/plain`` and every response
carries a strict Content-Security-Policy (``'wasm-unsafe-eval'`` is what asciinema-player's
WebAssembly terminal needs; no inline script).
"""

import json
from functools import wraps

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Exists, OuterRef, Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from audit.frames import FramesError
from audit.models import AuditEvent, Recording, RecordingKind, Session, Stage
from policy.models import Effect

AUDIT_READER = "audit.view_auditevent"
SESSIONS_PER_PAGE = 50
REQUESTS_PER_PAGE = 100
PAGE_CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
RAW_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"


def auditor_only(csp: str = PAGE_CSP):
    """Sign-in required (anonymous people go to the login page), then the auditor permission."""

    def decorate(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not (request.user.is_active and request.user.has_perm(AUDIT_READER)):
                raise PermissionDenied("reading the audit trail needs the audit.view_auditevent permission")
            response = view(request, *args, **kwargs)
            response.headers["Content-Security-Policy"] = csp
            response.headers["Cache-Control"] = "no-store, private"
            return response

        return login_required(wrapped)

    return decorate


class SessionFilter(forms.Form):
    user = forms.CharField(required=False, max_length=256, label="Agent")
    connection = forms.CharField(required=False, max_length=63)
    verb = forms.CharField(required=False, max_length=64)
    resource = forms.CharField(required=False, max_length=256, help_text="e.g. pods or pods/exec")
    decision = forms.ChoiceField(required=False, choices=[("", "any"), *Effect.choices])
    since = forms.DateTimeField(required=False, label="From (UTC)",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, label="Until (UTC)",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("'From' must not be later than 'Until'.")
        return data


def filter_sessions(data: dict):
    """Sessions of the agent and connection that hold a request matching every event filter."""
    sessions = Session.objects.all()
    if data.get("user"):
        sessions = sessions.filter(Q(user_username__icontains=data["user"]) | Q(user_uid=data["user"]))
    if data.get("connection"):
        sessions = sessions.filter(connection=data["connection"])
    events = {}
    if data.get("verb"):
        events["verb"] = data["verb"]
    if data.get("resource"):
        resource, _, subresource = data["resource"].partition("/")
        events["object_resource"] = resource
        if subresource:
            events["object_subresource"] = subresource
    if data.get("decision"):
        events["decision_effect"] = data["decision"]
    if data.get("since"):
        events["stage_timestamp__gte"] = data["since"]
    if data.get("until"):
        events["request_received_timestamp__lte"] = data["until"]
    if events:
        sessions = sessions.filter(Exists(AuditEvent.objects.filter(session=OuterRef("pk"), **events)))
    return sessions.order_by("-started_at", "-id")


def with_summary(sessions):
    """The page's sessions with their activity; aggregated per page, never over the whole table."""
    completions = ~Q(events__stage=Stage.REQUEST_RECEIVED)
    annotated = Session.objects.filter(pk__in=[s.pk for s in sessions]).with_activity().annotate(
        requests=Count("events__audit_id", distinct=True),
        denied=Count("events", filter=completions & Q(events__decision_effect=Effect.DENY)),
        dry_runs=Count("events", filter=completions & Q(events__dry_run=True)),
    )
    by_pk = {s.pk: s for s in annotated}
    return [by_pk[s.pk] for s in sessions]


@auditor_only()
def session_list(request):
    form = SessionFilter(request.GET or None)
    status = 200
    if form.is_bound and not form.is_valid():
        sessions, status = Session.objects.none(), 400
    else:
        sessions = filter_sessions(form.cleaned_data if form.is_bound else {})
    page = Paginator(sessions, SESSIONS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "sessions": with_summary(page.object_list),
               "query": query.urlencode()}
    return render(request, "audit/session_list.html", context, status=status)


def timeline(session: Session):
    """One row per request: its completion, or its RequestReceived when no completion exists."""
    completed = AuditEvent.objects.filter(audit_id=OuterRef("audit_id")).exclude(stage=Stage.REQUEST_RECEIVED)
    return (
        AuditEvent.objects.filter(session=session)
        .filter(~Q(stage=Stage.REQUEST_RECEIVED) | ~Exists(completed))
        .select_related("recording")
        .defer("request_body", "response_body", "recording__cast_text", "recording__frames")
        .order_by("seq")
    )


def describe(event: AuditEvent, received: dict) -> AuditEvent:
    """Display helpers for one timeline row."""
    at = timezone.localtime(event.request_received_timestamp)
    event.time_label = at.strftime("%H:%M:%S.%f")[:-3]
    event.date_label = at.strftime("%Y-%m-%d")
    event.recorded_first_at = received.get(event.audit_id)
    event.incomplete = event.stage == Stage.REQUEST_RECEIVED
    event.masked = sorted((kind, count) for kind, count in (event.masking_counts or {}).items() if count)
    try:
        event.replay = event.recording
    except Recording.DoesNotExist:
        event.replay = None
    return event


@auditor_only()
def session_detail(request, session_id):
    session = get_object_or_404(Session.objects.with_activity(), session_id=session_id)
    page = Paginator(timeline(session), REQUESTS_PER_PAGE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    received = dict(
        AuditEvent.objects.filter(
            session=session, stage=Stage.REQUEST_RECEIVED, audit_id__in=[e.audit_id for e in rows]
        ).values_list("audit_id", "stage_timestamp")
    )
    context = {"session": session, "page": page, "events": nest_tool_calls([describe(e, received) for e in rows])}
    return render(request, "audit/session_detail.html", context)


def nest_tool_calls(rows: list) -> list:
    """The timeline's top level: each MCP tool call (``mcp_tool``) carries the requests it caused
    (``parent_id``) as ``children``, in chain order, and is placed where its first request was; a
    request whose tool call is on another page stays on the top level, linked by ``parent_id``."""
    calls = {str(row.audit_id): row for row in rows if row.mcp_tool}
    top, first_child = [], {}
    for row in rows:
        row.children = []
    for row in rows:
        parent = calls.get(row.parent_id or "")
        if parent is not None and parent is not row:
            row.parent_seq = parent.seq
            parent.children.append(row)
            first_child.setdefault(id(parent), row.seq)
        else:
            top.append(row)
    return sorted(top, key=lambda row: first_child.get(id(row), row.seq))


def body_text(data: bytes, size: int) -> str:
    """A stored (masked) body for reading: JSON indented when it is complete, else as stored."""
    truncated = size > len(data)
    text = data.decode("utf-8", "replace")
    if not truncated:
        try:
            text = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    if truncated:
        text += f"\n… [truncated: {size} bytes in total, {len(data)} stored]"
    return text


@auditor_only(RAW_CSP)
def event_body(request, seq, part):
    event = get_object_or_404(AuditEvent.objects.only(f"{part}_body", f"{part}_body_size"), seq=seq)
    text = body_text(bytes(getattr(event, f"{part}_body")), getattr(event, f"{part}_body_size"))
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


@auditor_only(RAW_CSP)
def recording_cast(request, seq):
    recording = Recording.objects.filter(
        event__seq=seq, kind__in=[RecordingKind.EXEC, RecordingKind.ATTACH]
    ).only("cast_text", "frames", "command").first()
    if recording is None:
        raise Http404("no exec or attach recording for this event")
    try:
        cast = recording.asciicast  # rendered from the frames (audit/frames.py), or as stored
    except FramesError:
        return HttpResponse("this recording's frames cannot be read; run verify_audit", status=500,
                            content_type="text/plain; charset=utf-8")
    response = HttpResponse(cast, content_type="application/x-asciicast; charset=utf-8")
    response.headers["Content-Disposition"] = f'inline; filename="event-{seq}.cast"'
    return response
