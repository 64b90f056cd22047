"""AIRLOCK_AUDIT_KEYS: strict parsing, key ids, and rotation without breaking the chain."""

import base64
import io

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from audit import chain, keys
from audit.models import Anchor, AuditEvent
from audit.tests.factories import append, event

K1, K2 = keys.generate(), keys.generate()


def test_keys_are_parsed_strictly_and_never_echoed():
    short = base64.b64encode(b"s3cr3t" * 4).decode()
    for encoded, message in (([], "at least one key"), ([short], "entry 1 has 24 bytes"),
                             ([K1, "s3cr3t!!" * 8], "entry 2 is not base64")):
        with pytest.raises(ImproperlyConfigured, match=message) as exc:
            keys.Keyring(encoded)
        assert "s3cr3t" not in str(exc.value)


def test_the_first_key_signs_and_ids_name_keys_not_positions():
    ring = keys.Keyring([K2, K1])
    assert ring.active.key_id == keys.key_id_of(base64.urlsafe_b64decode(K2))
    assert ring.ids == [keys.Keyring([K2]).active.key_id, keys.Keyring([K1]).active.key_id]
    standard = base64.b64encode(base64.urlsafe_b64decode(K1)).decode()  # either base64 alphabet
    assert keys.Keyring([standard]).active == keys.Keyring([K1]).active
    assert K1 not in repr(ring.active)


@pytest.mark.django_db
def test_rotation_keeps_the_chain_verifiable_while_the_old_key_is_kept(settings):
    settings.AIRLOCK_AUDIT_KEYS = [K1]
    append(event(0), event(1))
    chain.make_anchor("schedule")
    settings.AIRLOCK_AUDIT_KEYS = [K2, K1]
    append(event(2))
    chain.make_anchor("schedule")
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    assert "intact: 3 events" in out.getvalue()
    old, new = keys.Keyring([K1]).active.key_id, keys.Keyring([K2]).active.key_id
    assert list(AuditEvent.objects.values_list("key_id", flat=True)) == [old, old, new]
    assert list(Anchor.objects.values_list("key_id", flat=True)) == [old, new]

    settings.AIRLOCK_AUDIT_KEYS = [K2]  # the old key dropped too early
    with pytest.raises(CommandError, match=f"unknown key: .*signed with key id '{old}'"):
        call_command("verify_audit", stdout=io.StringIO())
    settings.AIRLOCK_AUDIT_KEYS = [keys.generate()]  # another deployment's key
    with pytest.raises(CommandError, match="unknown key"):
        call_command("verify_audit", stdout=io.StringIO())


def test_audit_keys_command_generates_and_lists(settings):
    out = io.StringIO()
    call_command("audit_keys", "--generate", stdout=out)
    generated = out.getvalue().strip()
    assert len(base64.urlsafe_b64decode(generated)) == 32
    settings.AIRLOCK_AUDIT_KEYS = [K2, K1]
    out = io.StringIO()
    call_command("audit_keys", stdout=out)
    listing = out.getvalue()
    assert f"{keys.Keyring([K2]).active.key_id} (signs)" in listing
    assert keys.Keyring([K1]).active.key_id in listing
    assert K1 not in listing and K2 not in listing
