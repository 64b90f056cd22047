from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class ConnectionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "connections"

    def ready(self):
        from connections import registry
        from connections.models import Connection, TrustedProxy

        receiver = registry.on_connection_changed
        post_save.connect(receiver, sender=Connection, dispatch_uid="connections-registry-save")
        post_delete.connect(receiver, sender=Connection, dispatch_uid="connections-registry-delete")
        proxies = registry.on_trusted_proxy_changed
        post_save.connect(proxies, sender=TrustedProxy, dispatch_uid="connections-registry-proxy-save")
        post_delete.connect(proxies, sender=TrustedProxy, dispatch_uid="connections-registry-proxy-delete")
