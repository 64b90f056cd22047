from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class PolicyConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "policy"

    def ready(self):
        from policy.cache import invalidate_on_change
        from policy.models import Rule

        # A Connection's rename or deletion changes which rules its name loads; connections' own
        # ready() keeps its registry fresh, this keeps the compiled rules (policy sits above connections).
        for label, signal in (("post_save", post_save), ("post_delete", post_delete)):
            signal.connect(invalidate_on_change, sender=Rule, dispatch_uid=f"policy.rule.{label}")
            signal.connect(invalidate_on_change, sender="connections.Connection", dispatch_uid=f"policy.connection.{label}")
