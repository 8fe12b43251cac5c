from __future__ import annotations

from django.urls import path

from agents import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    path("customer/<int:customer_id>/", views.customer_detail, name="customer"),
    path("customer/<int:customer_id>/screen/", views.customer_screen_part, name="customer-screen"),
    path("customer/<int:customer_id>/history/", views.customer_history, name="customer-history"),
    path("customer/<int:customer_id>/profile/", views.customer_profile, name="customer-profile"),
    path(
        "customer/<int:customer_id>/offers/<int:presentation_id>/<str:answer>/",
        views.customer_offer_respond,
        name="customer-offer-respond",
    ),
    path("desk/state/", views.desk_state, name="desk-state"),
    path("desk/customers/new/", views.desk_new_customer, name="desk-new-customer"),
    path("floor/", views.floor_view, name="floor"),
    path("floor/part/", views.floor_part, name="floor-part"),
    path("floor/agents/<int:user_id>/offline/", views.floor_agent_offline, name="floor-agent-offline"),
    path("desk/wrap-up/done/", views.desk_wrap_up_done, name="desk-wrap-up-done"),
    path("desk/transfer-targets/", views.desk_transfer_targets, name="desk-transfer-targets"),
    path("desk/calls/<int:call_id>/", views.desk_call, name="desk-call"),
    path("desk/calls/<int:call_id>/<str:kind>/", views.desk_call_control, name="desk-call-control"),
]
