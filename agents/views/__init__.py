"""The staff desktop's pages, one module per concept; urls.py names them from here.

Views stay thin: parse the request, check it is a staff member, call a selector
or a service, render. The small dataclasses only shape values for the templates
(formatted phones, local times), so templates hold no logic and query nothing.
"""

from __future__ import annotations

from agents.views.common import (
    SEARCH_COUNT_CAP,
)
from agents.views.customer import (
    customer_detail,
    customer_offer_respond,
    customer_profile,
    customer_screen_part,
)
from agents.views.desk import (
    desk_call,
    desk_call_control,
    desk_new_customer,
    desk_state,
    desk_transfer_targets,
    desk_wrap_up_done,
)
from agents.views.floor import floor_agent_offline, floor_part, floor_view
from agents.views.history import customer_history
from agents.views.search import LoginView, LogoutView, home
from crm.staff_pages import staff_required

__all__ = [
    "SEARCH_COUNT_CAP",
    "LoginView",
    "LogoutView",
    "customer_detail",
    "customer_history",
    "customer_offer_respond",
    "customer_profile",
    "customer_screen_part",
    "desk_call",
    "desk_call_control",
    "desk_new_customer",
    "desk_state",
    "desk_transfer_targets",
    "desk_wrap_up_done",
    "floor_agent_offline",
    "floor_part",
    "floor_view",
    "home",
    "staff_required",
]
