from __future__ import annotations

from django.urls import path

from policies.consumers import MyOffersConsumer

websocket_urlpatterns = [path("ws/me/offers/", MyOffersConsumer.as_asgi())]
