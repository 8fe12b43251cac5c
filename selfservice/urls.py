from __future__ import annotations

from django.urls import path

from selfservice import views

urlpatterns = [
    path("", views.my_page, name="me"),
    path("offers/", views.my_offers, name="me-offers"),
    path("offers/<int:presentation_id>/<str:answer>/", views.my_offer_answer, name="me-offer-answer"),
]
