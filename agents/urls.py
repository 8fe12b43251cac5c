from __future__ import annotations

from django.urls import path

from agents import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    path("customer/<int:customer_id>/", views.customer_detail, name="customer"),
    path("customer/<int:customer_id>/screen/", views.customer_screen_part, name="customer-screen"),
]
