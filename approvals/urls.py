from django.contrib.auth import views as auth_views
from django.urls import include, path

from approvals import agent_api, auth, views

app_name = "approvals"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("oidc/authenticate/", auth.OIDCLogin.as_view(), name="oidc-login"),
    path("oidc/callback/", auth.OIDCCallback.as_view(), name="oidc-callback"),
    path("reviews/<int:review_id>/", views.detail, name="detail"),
    path("reviews/<int:review_id>/decide/", views.decide, name="decide"),
    path("leases/", views.lease_list, name="leases"),
    path("leases/<int:lease_id>/", views.lease_action, name="lease-action"),
    path("api/agent/leases/", agent_api.agent_leases, name="agent-leases"),
    path("api/", include("approvals.api")),
]
