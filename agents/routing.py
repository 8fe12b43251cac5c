from __future__ import annotations

from django.urls import path

from agents.consumers import DesktopConsumer

websocket_urlpatterns = [path("ws/desktop/", DesktopConsumer.as_asgi())]
