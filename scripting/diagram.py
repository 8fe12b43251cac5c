"""The flow of a script as an SVG drawn on the server: steps as boxes in
columns by their distance from the first step, branches as labelled arrows
(forward arrows straight, arrows going back curved below the boxes). No
JavaScript library: the designer swaps the SVG in when the draft changes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from scripting import validation

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 46, 90, 28, 20


def _layers(graph: dict[str, Any]) -> dict[str, int]:
    steps = validation.steps_by_key(graph)
    depth = {graph.get("start", ""): 0} if graph.get("start") in steps else {}
    frontier = list(depth)
    while frontier:
        following = []
        for key in frontier:
            for target in validation.targets(steps[key]):
                if target in steps and target not in depth:
                    depth[target] = depth[key] + 1
                    following.append(target)
        frontier = following
    unreachable = max(depth.values(), default=-1) + 1
    for key in steps:  # drawn too, in a last column, so the author sees them
        depth.setdefault(key, unreachable)
    return depth


def _short(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def svg(graph: dict[str, Any], *, problem_steps: Iterable[str] = (), current: str = "") -> SafeString:
    steps = validation.steps_by_key(graph)
    if not steps:
        return mark_safe("")
    depth = _layers(graph)
    rows: dict[int, int] = {}
    where: dict[str, tuple[int, int]] = {}
    for step in graph["steps"]:
        column = depth[step["key"]]
        row = rows.get(column, 0)
        rows[column] = row + 1
        where[step["key"]] = (PAD + column * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    width = PAD * 2 + (max(depth.values()) + 1) * (BOX_W + GAP_X) - GAP_X + 60  # room for a bend out
    height = PAD * 2 + max(rows.values()) * (BOX_H + GAP_Y) - GAP_Y + 60
    flagged = set(problem_steps)
    label = f"Flow of the script: {len(steps)} steps"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{label}" font-family="system-ui, sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#596372"/></marker></defs>',
    ]
    for key, step in steps.items():
        x1, y1 = where[key]
        edges = [(b.get("to", ""), b.get("label") or _branch_label(b)) for b in step.get("branches") or []]
        if step.get("next"):
            edges.append((step["next"], "default" if edges else ""))
        for number, (target, label) in enumerate(edges):
            if target not in where:
                continue
            x2, y2 = where[target]
            sy, ty = y1 + BOX_H / 2 + (number - len(edges) / 2) * 6, y2 + BOX_H / 2
            if x2 > x1:
                path = (
                    f"M {x1 + BOX_W} {sy} C {x1 + BOX_W + GAP_X / 2} {sy}, {x2 - GAP_X / 2} {ty}, {x2} {ty}"
                )
                lx, ly = (x1 + BOX_W + x2) / 2, (sy + ty) / 2 - 4
            elif x2 == x1:  # same column: a bend out to the right
                bulge = x1 + BOX_W + 30 + number * 8
                path = f"M {x1 + BOX_W} {sy} C {bulge} {sy}, {bulge} {ty}, {x2 + BOX_W} {ty}"
                lx, ly = bulge + 4, (sy + ty) / 2
            else:  # back: a curve under the boxes
                low = max(y1, y2) + BOX_H + 22 + number * 8
                sx, tx = x1 + BOX_W / 2, x2 + BOX_W / 2
                path = f"M {sx} {y1 + BOX_H} C {sx} {low}, {tx} {low}, {tx} {y2 + BOX_H}"
                lx, ly = (x1 + x2 + BOX_W) / 2, low - 4
            dash = ' stroke-dasharray="4 3"' if label == "default" else ""
            out.append(
                f'<path d="{path}" fill="none" stroke="#596372" stroke-width="1.4"{dash} '
                'marker-end="url(#arrow)"/>'
            )
            if label:
                out.append(f'<text x="{lx}" y="{ly}" text-anchor="middle" fill="#1b2330" class="edge-label">'
                           f"{escape(_short(label, 26))}</text>")  # fmt: skip
    for key, step in steps.items():
        x, y = where[key]
        fill = "#e5f4ea" if step.get("end") else ("#e7effb" if key == graph.get("start") else "#ffffff")
        stroke = "#a8231a" if key in flagged else ("#1d5bb8" if key == current else "#bfc5ce")
        width_px = 2 if key in flagged or key == current else 1
        title = escape(_short(step.get("title") or key, 22))
        notes = "".join(
            note for note, holds in ((" · end", step.get("end")), (" · start", key == graph.get("start")),
                                     (" · ⚠", key in flagged)) if holds
        )  # fmt: skip
        out.append(
            f'<g class="step" data-step="{escape(key)}">'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="{width_px}"/>'
            f'<text x="{x + 10}" y="{y + 19}" font-weight="600" fill="#1b2330">{title}</text>'
            f'<text x="{x + 10}" y="{y + 35}" fill="#596372">{escape(key)}{notes}</text></g>'
        )
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308  (every text above is escaped)


def _branch_label(branch: dict[str, Any]) -> str:
    if branch.get("kind") == "match":
        value = branch.get("value")
        shown = "yes" if value is True else "no" if value is False else str(value)
        return f"{branch.get('question', '')} = {shown}"
    return str(branch.get("condition", ""))
