from __future__ import annotations

from django.urls import path

from agents import api

urlpatterns = [
    path("calls/", api.CallsView.as_view(), name="api-calls"),
    path("calls/<str:call_id>/events/", api.CallEventsView.as_view(), name="api-call-events"),
]
