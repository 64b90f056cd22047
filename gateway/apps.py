from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class GatewayConfig(AppConfig):
    default_auto_field = 'django.db.models.BigAutoField'
    name = 'gateway'

    def ready(self):
        from gateway.models import Rule, invalidate_policy_caches

        for label, signal in (("post_save", post_save), ("post_delete", post_delete)):
            signal.connect(invalidate_policy_caches, sender=Rule, dispatch_uid=f"gateway.rule.{label}")
            signal.connect(invalidate_policy_caches, sender="connections.Connection",
                           dispatch_uid=f"gateway.connection.{label}")
