"""API v1 routes of the policies app (mounted under /api/v1/ by config/urls.py)."""

from __future__ import annotations

from django.urls import path

from policies import api

urlpatterns = [
    path("customers/<int:id>/offers/", api.CustomerOffersView.as_view(), name="api-customer-offers"),
    path("me/offers/", api.MyOffersView.as_view(), name="api-my-offers"),
    path("offers/deliveries/", api.OfferDeliveriesView.as_view(), name="api-offer-deliveries"),
    path("offers/deliveries/ack/", api.OfferDeliveriesAckView.as_view(), name="api-offer-deliveries-ack"),
    path("offers/<int:id>/accept/", api.OfferAcceptView.as_view(), name="api-offer-accept"),
    path("offers/<int:id>/decline/", api.OfferDeclineView.as_view(), name="api-offer-decline"),
    path("policies/vocabulary/", api.PolicyVocabularyView.as_view(), name="api-policy-vocabulary"),
    path("policies/check/", api.PolicyCheckView.as_view(), name="api-policy-check"),
]
