from django.urls import include, path

app_name = "approvals"

urlpatterns = [
    path("api/", include("approvals.api")),
]
