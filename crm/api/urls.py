from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from crm.api import events, touchpoints, views

router = DefaultRouter()
router.register("customers", views.CustomerViewSet, basename="customer")
router.register("households", views.HouseholdViewSet, basename="household")
router.register("accounts", views.AccountViewSet, basename="account")
router.register("products", views.ProductViewSet, basename="product")

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    path("me/", views.MeView.as_view(), name="api-me"),
    path("events", events.EventsView.as_view(), name="api-events"),
    path(
        "touchpoints/<slug:source_code>/results",
        touchpoints.TouchpointResultsView.as_view(),
        name="api-touchpoint-results",
    ),
    path(
        "touchpoints/<slug:source_code>/batches/<int:batch_id>",
        touchpoints.TouchpointBatchView.as_view(),
        name="api-touchpoint-batch",
    ),
    path("", include(router.urls)),
]
