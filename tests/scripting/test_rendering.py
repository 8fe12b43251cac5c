"""Merge fields: a whitelist, a fallback the author chose, everything escaped."""

from __future__ import annotations

import pytest

from crm.models import Customer
from scripting import rendering

pytestmark = pytest.mark.django_db


def test_fields_are_filled_and_a_missing_one_shows_its_fallback(dave_customer: Customer) -> None:
    values = rendering.merge_values(customer=dave_customer, call={"queue": "Card services"})
    html = rendering.render(
        'Hi {{ customer.first_name }}, {{call.queue}} here; your household {{ household.name | "none" }}.',
        values,
    )
    assert html == "Hi Dave, Card services here; your household none."


def test_values_and_text_are_html_escaped(dave_customer: Customer) -> None:
    dave_customer.given_name = "<script>alert(1)</script>"
    html = rendering.render(
        "<b>{{ customer.first_name }}</b>", rendering.merge_values(customer=dave_customer)
    )
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_fallback_may_carry_quotes_and_is_escaped_too() -> None:
    html = rendering.render('{{ offer.name | "our \\"best\\" <offer>" }}', {})
    assert html == "our &quot;best&quot; &lt;offer&gt;"


@pytest.mark.parametrize(
    "tag",
    ["{{ customer.__class__ }}", "{{ customer.first_name.__class__.__mro__ }}", "{{ settings.SECRET_KEY }}",
     "{% load static %}", "{{ customer.password }}", "{{ customer.first_name|upper }}"],
)  # fmt: skip
def test_nothing_beyond_the_offered_fields_is_reachable(tag: str, dave_customer: Customer) -> None:
    values = rendering.merge_values(customer=dave_customer)
    assert set(values) <= rendering.KNOWN
    html = rendering.render(f"x {tag} y", values)
    # The tag is shown as the author wrote it (escaped), never evaluated.
    assert html.startswith("x {") and "Dave" not in html and "object" not in html
    assert rendering.parse(tag).problems or tag.startswith("{%")
