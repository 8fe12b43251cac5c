"""The demo's offers and policies (seed_demo runs ``seed`` through CRM_DEMO_SEEDERS).

Idempotent: offers are found by code and policies by name, so running it again
on a seeded database changes nothing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from crm.models import Product, User
from policies import services
from policies.models import Offer, Policy

OFFERS: tuple[dict[str, Any], ...] = (
    {"code": "home-mortgage", "name": "A mortgage for your new home", "product": "mortgage-30-fixed",
     "channels": ["self_service", "agent_screen"], "value": Decimal("2500.00"),
     "talking_points": "Congratulate them on the move; our 30-year fixed rate is locked for 60 days "
                       "and pre-approval takes one call.",
     "self_service_text": "Moving? Lock today's 30-year fixed rate for 60 days and get pre-approved online."},
    {"code": "travel-rewards", "name": "Travel Rewards Visa Signature", "product": "travel-rewards-card",
     "channels": ["agent_screen", "self_service", "email"], "value": Decimal("300.00"),
     "talking_points": "3x points on travel and dining, no foreign transaction fees.",
     "self_service_text": "Earn 3x points on your next trip, with no foreign transaction fees."},
    {"code": "savings-boost", "name": "High-Yield Savings", "product": "high-yield-savings",
     "channels": ["agent_screen", "self_service", "outbound_call"], "value": Decimal("400.00"),
     "talking_points": "A large sum just left the account: keep the rest earning with our tiered APY.",
     "self_service_text": "Put your savings to work with our tiered APY and no minimum balance."},
    {"code": "fee-refund", "name": "Goodwill fee refund", "product": None, "channels": ["agent_screen"],
     "value": Decimal("25.00"), "marketing": False,
     "talking_points": "Apologise and refund the last monthly fee: you may do so without a supervisor.",
     "self_service_text": "We have refunded your last monthly fee."},
)  # fmt: skip


def _present(offer: str, *channels: str) -> list[dict[str, Any]]:
    return [{"action": "present_offer", "settings": {"offer": offer, "channels": list(channels)}}]


POLICIES: tuple[dict[str, Any], ...] = (
    {"name": "Platinum withdraws more than $10,000: a sales rep calls within a day",
     "trigger_types": ["transaction.withdrawal", "account.withdrawal"],
     "condition": 'customer.tier == "platinum" && event.amount > 10000.0', "priority": 90,
     "actions": [{"action": "create_task", "settings": {
         "kind": "sales_call", "title": "Large withdrawal by a platinum customer: call within a day",
         "due_in_hours": 24, "assign_to": "queue:sales", "priority": 1}}]},
    {"name": "Address change told to the call center: a mortgage offer on the self-service web",
     "trigger_types": ["customer.address_changed"], "condition": 'event.source == "crm"', "priority": 70,
     "actions": _present("home-mortgage", "self_service")},
    {"name": "Mortgage pages read, no offer declined lately: the mortgage on the agent screen",
     "trigger_types": ["web.page_view"],
     "condition": 'event.page_category == "mortgage" && history.count("offer.declined", 30) == 0',
     "priority": 60,
     "actions": _present("home-mortgage", "agent_screen")},
    {"name": "Travel spend by a tiered customer: the travel card (10% held out)",
     "trigger_types": ["transaction.purchase"],
     "condition": 'event.merchant_category == "travel" && event.amount > 500.0\n'
                  '&& customer.tier != "standard"',
     "priority": 50, "holdout_percent": 10,
     "actions": [{"action": "present_offer",
                  "settings": {"offer": "travel-rewards", "channels": ["agent_screen", "email"]}}]},
    {"name": "A complaint on a call: tell the supervisors, refund a fee",
     "trigger_types": ["call.disposition"], "condition": 'event.disposition == "complaint"', "priority": 80,
     "actions": [{"action": "notify_agent", "settings": {"to": "role:supervisor",
                                                         "message": "A customer complained on a call."}},
                 *_present("fee-refund", "agent_screen"),
                 {"action": "tag_customer", "settings": {"tag": "complained"}}]},
)  # fmt: skip


def seed(*, author: User | None = None) -> list[str]:
    """Create what is missing; return the summary lines for seed_demo."""
    products = {p.code: p for p in Product.objects.all()}
    made_offers = made_policies = 0
    for spec in OFFERS:
        if Offer.objects.filter(code=spec["code"]).exists():
            continue
        fields = {k: v for k, v in spec.items() if k not in ("code", "product")}
        services.offer_save(
            code=spec["code"], product=products.get(spec["product"] or ""), status="active", **fields
        )
        made_offers += 1
    author = author or User.objects.filter(username="supervisor").first()
    for spec in POLICIES:
        if Policy.objects.filter(name=spec["name"]).exists():
            continue
        services.policy_save(actor=author, status="active", **spec)
        made_policies += 1
    if not (made_offers or made_policies):
        return []
    example = POLICIES[0]["name"]
    return [f"  {made_offers} offers and {made_policies} interaction policies (active), e.g. “{example}”"]
