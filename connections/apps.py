from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class ConnectionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "connections"

    def ready(self):
        from connections import registry
        from connections.models import Connection

        post_save.connect(registry.on_connection_changed, sender=Connection, dispatch_uid="connections-registry-save")
        post_delete.connect(registry.on_connection_changed, sender=Connection, dispatch_uid="connections-registry-delete")
