"""Charts of the policy results, drawn as inline SVG on the server (no script)."""

from __future__ import annotations

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from policies.models import OfferChannel
from policies.selectors import ChannelDay, Rate

register = template.Library()

GAP = 2
HEIGHT = 60
CHART_WIDTH = 330  # about, whatever the number of days: a week's bars are wide, a quarter's thin


@register.filter
def total(counts: dict[str, int]) -> int:
    return sum(counts.values())


@register.filter
def channel_label(value: str) -> str:
    return str(dict(OfferChannel.choices).get(value, value))


@register.filter
def points(value: float | None) -> str:
    """A difference of rates in percentage points, signed."""
    if value is None:
        return "—"
    return f"{value * 100:+.1f}"


@register.simple_tag
def percent(part: int, whole: int) -> str:
    return f"{part * 100 / whole:.0f}" if whole else "0"


@register.simple_tag
def daily_bars(days: list[ChannelDay], peak: int) -> SafeString:
    """One bar a day: its height the presentations, its dark part the acceptances;
    each bar's title says the date and the counts (hover, or a screen reader)."""
    scale = HEIGHT / peak if peak else 0
    bar_width = max(3, min(30, CHART_WIDTH // len(days) - GAP))
    width = len(days) * (bar_width + GAP)
    bars = []
    for i, day in enumerate(days):
        x = i * (bar_width + GAP)
        shown = day.presented * scale
        taken = day.accepted * scale
        rate = f", {day.rate:.0%} accepted" if day.rate is not None else ""
        bars.append((
            f"{day.day:%b %-d}: {day.presented} presented, {day.accepted} accepted{rate}",
            x, f"{HEIGHT - shown:.1f}", bar_width, f"{shown:.1f}", x, f"{HEIGHT - taken:.1f}", bar_width,
            f"{taken:.1f}",
        ))  # fmt: skip
    body = format_html_join(
        "",
        '<g><title>{}</title><rect class="bar-shown" x="{}" y="{}" width="{}" height="{}"/>'
        '<rect class="bar-taken" x="{}" y="{}" width="{}" height="{}"/></g>',
        bars,
    )
    first, last = days[0].day, days[-1].day
    return format_html(
        '<svg class="bars" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{label}">'
        "{body}"
        '<line class="axis" x1="0" y1="{h}" x2="{w}" y2="{h}"/></svg>'
        '<div class="bars-axis"><span>{first}</span><span>peak {peak}/day</span><span>{last}</span></div>',
        w=width, h=HEIGHT, body=body, first=f"{first:%b %-d}", last=f"{last:%b %-d}", peak=peak,
        label=f"Presented and accepted per day from {first:%b %-d} to {last:%b %-d}",
    )  # fmt: skip


@register.simple_tag
def rate_bar(rate: Rate) -> SafeString:
    """The rate as a dot on a 0-100% line, its Wilson interval as a band."""
    interval = rate.wilson
    if rate.rate is None or interval is None:
        return format_html('<span class="muted">—</span>')
    low, high = interval
    return format_html(
        '<span class="ci"><svg viewBox="0 0 200 14" width="200" height="14" aria-hidden="true">'
        '<line class="ci-track" x1="0" y1="7" x2="200" y2="7"/>'
        '<rect class="ci-band" x="{}" y="3" width="{}" height="8" rx="2"/>'
        '<circle class="ci-dot" cx="{}" cy="7" r="4"/></svg> '
        '<strong>{}</strong> <span class="muted">({} – {})</span></span>',
        f"{low * 200:.1f}", f"{max((high - low) * 200, 1):.1f}", f"{rate.rate * 200:.1f}",
        f"{rate.rate:.1%}", f"{low:.1%}", f"{high:.1%}",
    )  # fmt: skip
