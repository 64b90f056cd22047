"""The admin base every app's read-only models extend."""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Listed, searched and read in the admin; never added, changed or deleted there.

    What changes these records goes through the app's own path (the recorder, the dashboard, the API),
    where its rules are enforced and every step is recorded.
    """

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
