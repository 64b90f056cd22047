from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("approvals/", include("approvals.urls")),
    path("audit/", include("audit.urls")),
]
