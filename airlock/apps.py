from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    """django.contrib.admin with Airlock's default site (airlock.admin.AirlockAdminSite)."""

    default_site = "airlock.admin.AirlockAdminSite"
