"""Conditions are checked when a policy is saved: syntax, names and types, with positions."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from policies import conditions

WITHDRAWALS = ["transaction.withdrawal", "account.withdrawal"]


def errors_of(condition: str, types: list[str] | None = None) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        conditions.check(condition, types or WITHDRAWALS)
    return caught.value.message_dict["condition"]


@pytest.mark.parametrize(
    "condition",
    [
        'customer.tier == "platinum" && event.amount > 10000.0',
        'history.count("offer.declined", 30) == 0',
        'history.days_since("offer.declined") > 30 && customer.lifetime_value >= 1000',
        "event.amount > 10000 || customer.do_not_call",
        '[1, 2].exists(x, x > 1) && event.source == "ivr"',
        "",
    ],
)
def test_the_documented_conditions_compile(condition: str) -> None:
    conditions.check(condition, WITHDRAWALS)


def test_a_syntax_error_names_its_line_and_column() -> None:
    assert errors_of('customer.tier == "platinum" &&') == [
        "Line 1, column 31: Syntax error: mismatched input '<EOF>' "
        "(the expression ends too early: something is missing at the end)."
    ]
    assert errors_of("event.amount >\n  * 3")[0].startswith("Line 2, column 3: Syntax error")


def test_an_unknown_field_is_named_with_its_position_and_the_fields_there_are() -> None:
    (message,) = errors_of("event.amount > 1.0 && event.amout > 2.0")
    assert message.startswith("Line 1, column 29: Unknown field event.amout")
    assert "amount" in message and "account_number" in message


def test_a_field_only_some_trigger_types_have_is_refused() -> None:
    (message,) = errors_of('event.channel == "atm"')
    assert "event.channel is a field of transaction.withdrawal but not of every trigger type" in message
    conditions.check('event.channel == "atm"', ["transaction.withdrawal"])


def test_unknown_names_customer_fields_and_history_functions_are_refused() -> None:
    assert errors_of('custmer.tier == "gold"')[0].startswith("Line 1, column 1: Unknown name “custmer”")
    assert "Unknown field customer.shoe_size" in errors_of("customer.shoe_size > 3")[0]
    assert "history has no recent" in errors_of('history.recent("offer.declined") == 0')[0]
    assert (
        "“offer.rejected” is not a known event type"
        in errors_of('history.count("offer.rejected", 30) == 0')[0]
    )
    assert "number of days" in errors_of('history.count("offer.declined") == 0')[0]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("customer.tier == 5", "Line 1, column 15: customer.tier is text and 5 is a whole number"),
        ('event.amount > "10000"', 'Line 1, column 14: event.amount is a number and "10000" is text'),
        ("customer.do_not_call == 1", "Line 1, column 22: customer.do_not_call is true or false and 1 is"),
    ],
)
def test_a_comparison_of_different_types_is_refused_where_it_is(condition: str, expected: str) -> None:
    (message,) = errors_of(condition)
    assert message.startswith(expected)
    assert "never converts" in message


def test_other_type_errors_and_a_non_boolean_result_are_refused() -> None:
    assert "cannot be evaluated" in errors_of('event.amount + "x" == 1.0')[0]
    assert errors_of("event.amount")[0].startswith("The condition must give true or false")


def test_history_counts_and_recency_come_from_the_customers_events() -> None:
    history = conditions.History({"offer.declined": [2.5, 40.0]})
    program = conditions.check(
        'history.count("offer.declined", 30) == 1 && history.days_since("offer.declined") == 2', WITHDRAWALS
    )
    context = conditions.evaluation_context(event={"amount": 1.0}, customer={"tier": "gold"}, history=history)
    assert program is not None and program.execute(context) is True
    never = conditions.evaluation_context(event={}, customer={}, history=conditions.History())
    recency = conditions.compiled(1, 1, 'history.days_since("offer.declined") > 365')
    assert recency is not None and recency.execute(never) is True
