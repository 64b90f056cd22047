from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save

from runtime import invalidation


def _invalidate_leases(sender, instance, using="default", **kwargs):
    """A saved lease is seen by this process's gateway at once, by the others once the commit is announced
    (runtime.invalidation; approvals.live's airlock.leases listener too)."""
    from django.db import transaction

    from approvals import lease_check

    lease_check.invalidate_all(instance.connection)
    transaction.on_commit(lambda: lease_check.invalidate_all(instance.connection), using=using)
    invalidation.announce_on_commit("leases", instance.connection, using=using)


class ApprovalsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "approvals"

    def ready(self):
        from approvals.models import Lease

        post_save.connect(_invalidate_leases, sender=Lease, dispatch_uid="approvals-lease-save")
        post_delete.connect(_invalidate_leases, sender=Lease, dispatch_uid="approvals-lease-delete")
