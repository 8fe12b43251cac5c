"""The demo's offers and policies: valid, active, and seeded once."""

from __future__ import annotations

from crm.management.sample_data import ensure_sources_and_products
from crm.models import User
from policies import demo
from policies.models import Offer, Policy


def test_the_demo_policies_are_valid_active_and_seeded_once(bob: User) -> None:
    ensure_sources_and_products()
    lines = demo.seed(author=bob)
    assert "4 offers and 5 interaction policies" in lines[0]
    assert Policy.objects.filter(status="active").count() == 5
    product = Offer.objects.get(code="home-mortgage").product
    assert product is not None and product.code == "mortgage-30-fixed"
    platinum = Policy.objects.get(name__startswith="Platinum withdraws")
    assert platinum.condition == 'customer.tier == "platinum" && event.amount > 10000.0'
    assert demo.seed(author=bob) == []
    assert Policy.objects.count() == 5 and Offer.objects.count() == 4
