"""ASGI entry point: Django for HTTP, Channels consumers for WebSockets."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from agents.routing import websocket_urlpatterns as agent_routes  # noqa: E402
from policies.routing import websocket_urlpatterns as self_service_routes  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(agent_routes + self_service_routes))
        ),
    }
)

# Everything loaded so far lives as long as the process. Python's full collection
# walked all of it (~50 ms for the ~110,000 objects of a started process, measured),
# a pause that lands on whichever request or frame is running: the views are
# imported now rather than on the first request, and the lot is moved out of the
# collector's reach. Later garbage is collected with a larger first generation
# (config.heap).
from django.urls import get_resolver  # noqa: E402

from config import heap  # noqa: E402

get_resolver().url_patterns  # noqa: B018  (imports every view)
heap.settle()
