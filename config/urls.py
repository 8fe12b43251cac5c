from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

# A no-op where the admin's app config already discovered the admin modules (web
# processes); a worker skips that at start (config/celery.py) and gets them here if
# a task ever resolves an admin URL.
admin.autodiscover()

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("crm.api.urls")),
    path("api/v1/", include("agents.api_urls")),
    path("api/v1/", include("policies.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("policies/", include("policies.page_urls")),
    path("scripts/", include("scripting.urls")),
    path("me/", include("selfservice.urls")),
    path("", include("agents.urls")),
]

handler404 = "crm.api.errors.page_not_found"
handler500 = "crm.api.errors.server_error"
