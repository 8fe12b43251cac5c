"""Frames leave through the real channel layer (Redis) in the order they were handed over."""

from __future__ import annotations

from crm import realtime
from tests.listening import hear


def frame(n: int) -> dict[str, object]:
    return {"type": "crm.event", "event": "test.frame", "n": n}


def test_a_lot_reaches_each_listened_group_in_the_order_it_was_handed_over() -> None:
    watched, other, unwatched = "customer.910001", "customer.910002", "customer.910003"
    lot = [
        (watched, frame(1)),
        (unwatched, frame(2)),
        (other, frame(3)),
        (watched, frame(4)),
        (other, frame(5)),
    ]
    _, heard = hear([watched, other], lambda: realtime.send_many_now(lot), frames=5, timeout=1.0)
    assert [f["n"] for f in heard] == [1, 3, 4, 5]


def test_a_lot_of_many_groups_asks_who_listens_and_still_reaches_them_in_order() -> None:
    groups = [f"customer.92{n:04d}" for n in range(realtime.ASK_WHO_LISTENS_OVER * 3)]
    lot = [(group, frame(n)) for n, group in enumerate(groups)] + [(groups[5], frame(999))]
    listened = [groups[5], groups[17]]
    _, heard = hear(listened, lambda: realtime.send_many_now(lot), frames=4, timeout=1.0)
    assert [f["n"] for f in heard] == [5, 17, 999]
