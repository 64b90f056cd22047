from django.apps import AppConfig


class GatewayConfig(AppConfig):
    """The data path.  It has no models any more; the app stays installed for its migrations: they
    created the ``gateway_rule`` table that ``policy.Rule`` still uses, and 0004 hands the model to
    the policy app in state only (the database keeps the table, its rows and its constraint names)."""

    default_auto_field = 'django.db.models.BigAutoField'
    name = 'gateway'
