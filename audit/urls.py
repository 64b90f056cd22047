from django.urls import path

from audit import views

app_name = "audit"

urlpatterns = [
    path("", views.session_list, name="sessions"),
    path("sessions/<uuid:session_id>/", views.session_detail, name="session"),
    path("events/<int:seq>/request-body/", views.event_body, {"part": "request"}, name="request-body"),
    path("events/<int:seq>/response-body/", views.event_body, {"part": "response"}, name="response-body"),
    path("events/<int:seq>/recording.cast", views.recording_cast, name="recording-cast"),
]
