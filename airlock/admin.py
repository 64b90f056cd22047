"""The admin site: a changelist filters only by the filters its model admin offers.

Django lets a changelist URL filter by any local field (``?token_ciphertext__startswith=g``)
and across a relation to its primary key (``/admin/auth/user/?auth_token__key__startswith=f3``).
The pages never show those columns, but the row count answers one guess per request: a staff
user who may only view users reads every reviewer's API key, a character at a time, and acts as
them through the approvals API.  So a lookup is allowed only when it is a parameter of one of the
admin's own list filters or its date hierarchy, for every model admin registered on the site,
Django's own included (:meth:`AirlockAdminSite.register`).
"""

from django.contrib import admin
from django.contrib.admin.filters import FieldListFilter
from django.contrib.admin.utils import get_fields_from_path

DATE_HIERARCHY_PARTS = ("year", "month", "day")


class OfferedFiltersOnly:
    """ModelAdmin mixin: URL lookups limited to the parameters of the admin's own filters."""

    def lookup_allowed(self, lookup, value, request=None):
        return lookup in self.offered_lookups(request) and super().lookup_allowed(lookup, value, request)

    def offered_lookups(self, request) -> set[str]:
        """The query parameters the changelist's filters and date hierarchy read, and each filtered field."""
        offered = set()
        if self.date_hierarchy:
            offered.update(f"{self.date_hierarchy}__{part}" for part in DATE_HIERARCHY_PARTS)
        filters = self.get_list_filter(request) if request is not None else self.list_filter
        for item in filters:
            if isinstance(item, type):  # a SimpleListFilter subclass
                offered.add(item.parameter_name)
                continue
            field_path, filter_class = item if isinstance(item, (list, tuple)) else (item, FieldListFilter.create)
            field = get_fields_from_path(self.model, field_path)[-1]
            spec = filter_class(field, request, {}, self.model, self, field_path=field_path)
            offered.update(spec.expected_parameters())
            offered.add(field_path)  # ?kind=exec: the filter's field, compared for equality
        return offered


class AirlockAdminSite(admin.AdminSite):
    """The default admin site (airlock.apps.AdminConfig): every model admin gets OfferedFiltersOnly."""

    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, OfferedFiltersOnly):
            admin_class = type(admin_class.__name__, (OfferedFiltersOnly, admin_class),
                               {"__module__": admin_class.__module__, "__doc__": admin_class.__doc__})
        super().register(model_or_iterable, admin_class, **options)
