from __future__ import annotations

from django.urls import path

from agents import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    path("customer/<int:customer_id>/", views.customer_detail, name="customer"),
    path("customer/<int:customer_id>/screen/", views.customer_screen_part, name="customer-screen"),
    path("desk/state/", views.desk_state, name="desk-state"),
    path("desk/wrap-up/done/", views.desk_wrap_up_done, name="desk-wrap-up-done"),
    path("desk/calls/<int:call_id>/", views.desk_call, name="desk-call"),
    path("desk/calls/<int:call_id>/<str:kind>/", views.desk_call_control, name="desk-call-control"),
]
