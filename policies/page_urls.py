"""The supervisor pages (mounted under /policies/ by config/urls.py)."""

from __future__ import annotations

from django.urls import path

from policies import views

urlpatterns = [
    path("", views.policy_list, name="policy-list"),
    path("new/", views.policy_new, name="policy-new"),
    path("check/", views.policy_check, name="policy-check"),
    path("<int:policy_id>/", views.policy_detail, name="policy-detail"),
    path("<int:policy_id>/edit/", views.policy_edit, name="policy-edit"),
    path("<int:policy_id>/status/", views.policy_status, name="policy-status"),
    path("<int:policy_id>/simulate/", views.policy_simulate, name="policy-simulate"),
    path("simulations/<str:run_id>/", views.simulation_part, name="policy-simulation"),
    path("offers/", views.offer_list, name="offer-list"),
    path("offers/new/", views.offer_new, name="offer-new"),
    path("offers/<int:offer_id>/", views.offer_detail, name="offer-detail"),
    path("offers/<int:offer_id>/edit/", views.offer_edit, name="offer-edit"),
]
