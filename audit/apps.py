from django.apps import AppConfig

from audit.keys import keyring


class AuditConfig(AppConfig):
    default_auto_field = 'django.db.models.BigAutoField'
    name = 'audit'

    def ready(self):
        keyring()  # a malformed AIRLOCK_AUDIT_KEYS stops the process at start, not at its first event
