"""Admin for policy rules: list/filter/edit, export as YAML, import YAML, apply a preset."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from connections.models import Connection
from policy import presets, rulesets
from policy.models import Rule


def _entries(text: str) -> list[str]:
    return [entry.strip() for entry in text.replace(",", "\n").splitlines() if entry.strip()]


class PresetForm(forms.Form):
    connection = forms.ModelChoiceField(queryset=Connection.objects.all())
    preset = forms.ChoiceField(choices=[(name, name) for name in sorted(presets.PRESETS)])
    groups = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="IdP groups (or globs) the preset's rules apply to, one per line or comma-separated.",
    )
    subjects = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Usernames or subjects (or globs) the preset's rules apply to.",
    )
    everyone = forms.BooleanField(
        required=False, help_text="Apply the rules to every authenticated principal instead."
    )
    name_prefix = forms.CharField(
        required=False, max_length=40,
        help_text="Put before each rule name, so several bound presets can live on one connection.",
    )
    replace = forms.BooleanField(
        required=False, help_text="Delete the connection's existing rules first (in the same transaction)."
    )

    def clean(self):
        data = super().clean()
        data["groups"] = _entries(data.get("groups", ""))
        data["subjects"] = _entries(data.get("subjects", ""))
        if data.get("everyone") == bool(data["groups"] or data["subjects"]):
            raise forms.ValidationError(
                "Say whom the preset applies to: groups and/or subjects, or everyone (but not both)."
            )
        return data


class ImportForm(forms.Form):
    connection = forms.ModelChoiceField(queryset=Connection.objects.all())
    file = forms.FileField(help_text="A RuleSet YAML document (apiVersion: airlock.dev/v1).")
    replace = forms.BooleanField(
        required=False, help_text="Delete the connection's existing rules first (in the same transaction)."
    )


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    list_display = (
        "name", "connection", "order", "effect", "enabled", "matches", "mask_secrets", "requires_lease",
        "updated_at",
    )
    list_display_links = ("name",)
    list_filter = ("connection", "effect", "enabled")
    list_select_related = ("connection",)
    ordering = ("connection__name", "order", "name")
    search_fields = ("name", "description", "connection__name")
    actions = ["export_yaml"]
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("connection", "order", "name", "description", "enabled", "effect")}),
        ("Who", {"fields": ("subjects", "groups")}),
        ("Resource requests", {"fields": ("verbs", "api_groups", "resources", "namespaces", "names", "dry_run")}),
        ("Non-resource requests", {"fields": ("non_resource_urls",)}),
        ("Effect settings", {"fields": ("mask_secrets", "requires_lease", "min_approvals", "reviewer_groups",
                                        "review_hold")}),
        ("Budget", {"fields": ("budget",)}),
        (None, {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="matches")
    def matches(self, rule):
        targets = rule.resources or rule.non_resource_urls
        text = f"{' '.join(map(str, rule.verbs))} {' '.join(map(str, targets))}"
        return {"only": f"{text} (dry runs only)", "never": f"{text} (no dry runs)"}.get(rule.dry_run, text)

    def get_changeform_initial_data(self, request):
        initial = {"subjects": ["*"], "api_groups": ["*"], "namespaces": ["*"], "names": ["*"]}
        return initial | super().get_changeform_initial_data(request)

    @admin.action(description="Export selected rules as YAML")
    def export_yaml(self, request, queryset):
        connections = {rule.connection for rule in queryset}
        if len(connections) != 1:
            self.message_user(
                request, "Select rules of exactly one connection to export.", level=messages.ERROR
            )
            return None
        connection = connections.pop()
        response = HttpResponse(
            rulesets.dump(queryset, connection.name), content_type="application/yaml; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="{connection.name}-rules.yaml"'
        return response

    # -- preset / import views ------------------------------------------------

    def get_urls(self):
        opts = self.model._meta
        extra = [
            path(
                "apply-preset/",
                self.admin_site.admin_view(self.apply_preset_view),
                name=f"{opts.app_label}_{opts.model_name}_apply_preset",
            ),
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name=f"{opts.app_label}_{opts.model_name}_import",
            ),
        ]
        return extra + super().get_urls()

    def _check_write_permission(self, request, replace: bool):
        if not self.has_add_permission(request) or (replace and not self.has_delete_permission(request)):
            raise PermissionDenied

    def _tool_view(self, request, form_class, title, run):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = form_class(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            self._check_write_permission(request, form.cleaned_data["replace"])
            try:
                created = run(form.cleaned_data)
            except rulesets.RuleSetError as exc:
                for error in exc.errors:
                    form.add_error(None, error)
            else:
                connection = form.cleaned_data["connection"]
                self.message_user(
                    request, f"{len(created)} rule(s) written to connection {connection.name}.",
                    level=messages.SUCCESS,
                )
                changelist = reverse(f"admin:{self.model._meta.app_label}_{self.model._meta.model_name}_changelist")
                return HttpResponseRedirect(f"{changelist}?connection__id__exact={connection.pk}")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "form": form,
        }
        return TemplateResponse(request, "admin/policy/rule/rule_tool.html", context)

    def apply_preset_view(self, request):
        return self._tool_view(
            request, PresetForm, "Apply a rule preset",
            lambda data: presets.apply_preset(
                data["connection"], data["preset"], subjects=data["subjects"], groups=data["groups"],
                name_prefix=data["name_prefix"], replace=data["replace"],
            ),
        )

    def import_view(self, request):
        def run(data):
            upload = data["file"]
            if upload.size > rulesets.MAX_DOCUMENT_BYTES:
                raise rulesets.RuleSetError([f"the file is larger than {rulesets.MAX_DOCUMENT_BYTES} bytes"])
            return rulesets.import_text(data["connection"], upload.read(), replace=data["replace"])

        return self._tool_view(request, ImportForm, "Import rules from YAML", run)
