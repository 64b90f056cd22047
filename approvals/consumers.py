"""Live dashboard over a WebSocket: every review or lease change pushes fresh fragments.

Each message is HTML that htmx (ws extension) swaps out of band by element
id: the pending queue, the changed review's status (on its detail page) and
the open leases.  Read-only: the socket never accepts commands, decisions go
through CSRF-protected forms or the API.
"""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from approvals.broadcast import DASHBOARD_GROUP
from approvals.models import Review

READERS = ("approvals.view_review", "approvals.decide_review", "approvals.view_lease", "approvals.grant_lease")
CLOSE_FORBIDDEN = 4403


@database_sync_to_async
def may_watch(user) -> bool:
    return user.is_authenticated and user.is_active and any(user.has_perm(p) for p in READERS)


@database_sync_to_async
def render_review_change(review_id, user) -> str:
    from approvals.views import pending_context, review_context

    html = render_to_string("approvals/_pending.html", {**pending_context(), "oob": True})
    review = Review.objects.filter(pk=review_id).first() if isinstance(review_id, int) else None
    if review is not None:
        context = {**review_context(review, user), "oob": True}
        html += render_to_string("approvals/_status.html", context)
        html += render_to_string("approvals/_preview.html", context)
    return html


@database_sync_to_async
def render_leases() -> str:
    from approvals.views import leases_context

    return render_to_string("approvals/_leases.html", {**leases_context(), "oob": True})


class DashboardConsumer(AsyncWebsocketConsumer):
    groups = []

    async def connect(self):
        self.user = self.scope.get("user")
        if self.user is None or not await may_watch(self.user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """Read-only: whatever the browser sends is ignored."""

    async def review_changed(self, event):
        await self.send(text_data=await render_review_change(event.get("review"), self.user))

    async def lease_changed(self, event):
        await self.send(text_data=await render_leases())
