"""The supervisor's floor view."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_POST

from agents import selectors as agents_selectors
from agents import services as agents_services
from agents.models import Agent
from agents.views.common import (
    json_error,
)
from crm.exceptions import Conflict
from crm.staff_pages import desktop_context, staff_of, staff_required

# --- The supervisor's floor view ---------------------------------------------------------------


def _floor_context(request: HttpRequest) -> dict[str, Any]:
    user = staff_of(request)
    return desktop_context(
        request,
        floor=agents_selectors.floor(zone=user.time_zone),
        now=timezone.now(),
        can_manage=user.has_perm("agents.manage_floor"),
    )


@staff_required
def floor_view(request: HttpRequest) -> HttpResponse:
    """Who is available, on a call or away; calls waiting; today's service level.
    Kept current over the desk socket (a frame makes it re-read the part below)."""
    if not staff_of(request).has_perm("agents.view_floor"):
        return render(request, "agents/forbidden.html", {"who": "an agent"}, status=403)
    return render(request, "agents/floor.html", _floor_context(request))


@staff_required
def floor_part(request: HttpRequest) -> HttpResponse:
    if not staff_of(request).has_perm("agents.view_floor"):
        return HttpResponse(status=403)
    response = render(request, "agents/_floor.html", _floor_context(request))
    response["Cache-Control"] = "no-store"
    return response


@staff_required
@require_POST
def floor_agent_offline(request: HttpRequest, user_id: int) -> HttpResponse:
    """A supervisor signs an idle agent off the floor (a desk left open)."""
    supervisor = staff_of(request)
    if not supervisor.has_perm("agents.manage_floor"):
        return JsonResponse({"error": "Only supervisors may change another agent's state."}, status=403)
    agent = Agent.objects.select_related("user").filter(pk=user_id).first()
    if agent is None:
        return JsonResponse({"error": "No such agent."}, status=404)
    try:
        agents_services.agent_force_offline(user=agent.user, by=supervisor)
    except Conflict as exc:
        return json_error(exc, 409)
    return JsonResponse({"state": "offline"})
