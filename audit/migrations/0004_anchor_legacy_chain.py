"""Sign the head of a chain written before audit keys existed (a "legacy" anchor).

Events from before migration 0003 have no HMAC.  The first keyed event after them covers them
(its hash covers theirs), and until one is written this anchor does: verify_chain accepts
unkeyed events only as a prefix of the chain that a keyed event or a signed anchor closes.  The
legacy events are thereby trusted as they stand at this migration; anything done to them
before it is beyond what a key added now can show.  Signed with the active AIRLOCK_AUDIT_KEYS
key of the environment running ``migrate``; nothing to do on an empty chain.
"""

from django.conf import settings
from django.db import migrations
from django.utils import timezone

from audit.anchors import sign
from audit.keys import Keyring


def anchor_legacy_head(apps, schema_editor):
    AuditEvent = apps.get_model("audit", "AuditEvent")
    Anchor = apps.get_model("audit", "Anchor")
    database = schema_editor.connection.alias
    head = AuditEvent.objects.using(database).order_by("-seq").values_list("seq", "hash", "key_id").first()
    if head is None or head[2]:
        return
    created_at = timezone.now()
    record = sign(head[0], head[1], created_at, "legacy", Keyring(list(settings.AIRLOCK_AUDIT_KEYS)))
    Anchor.objects.using(database).create(
        seq=record.seq, hash=record.hash, created_at=created_at, reason="legacy", key_id=record.key_id, mac=record.mac,
    )


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_keyed_chain")]

    operations = [migrations.RunPython(anchor_legacy_head, migrations.RunPython.noop)]
