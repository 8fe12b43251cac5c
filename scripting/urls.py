from __future__ import annotations

from django.urls import path

from scripting.views import design, panel

urlpatterns = [
    # The agent's panel on the customer screen.
    path("customer/<int:customer_id>/start/", panel.panel_start, name="script-start"),
    path("runs/<int:run_id>/answer/", panel.panel_answer, name="script-answer"),
    path("runs/<int:run_id>/next/", panel.panel_next, name="script-next"),
    path("runs/<int:run_id>/back/", panel.panel_back, name="script-back"),
    # Supervisors.
    path("", design.script_list, name="script-list"),
    path("new/", design.script_new, name="script-new"),
    path("assignments/", design.assignments, name="script-assignments"),
    path("<int:script_id>/", design.designer, name="script-designer"),
    path("<int:script_id>/edit/", design.designer_edit, name="script-designer-edit"),
    path("<int:script_id>/publish/", design.script_publish, name="script-publish"),
    path("<int:script_id>/clone/", design.script_clone, name="script-clone"),
    path("<int:script_id>/preview/", design.script_preview, name="script-preview"),
    path("versions/<int:version_id>/retire/", design.version_retire, name="script-version-retire"),
    path("versions/<int:version_id>/analytics/", design.analytics, name="script-analytics"),
    path("<int:script_id>/compare/", design.compare, name="script-compare"),
]
