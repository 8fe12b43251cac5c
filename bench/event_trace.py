"""The stages of an offer's way, for ``bench/event_to_offer.py --trace``: the web
process's application with each stage stamped into its frames
(``traced_application``, run by uvicorn as a factory), and the p50/p99 per
stage over a run (``stages``)."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.screen_pop import percentile

# The stages of an offer's way, in order: (name, from, to) over the trace's stamps.
# "sent", "answered" and "arrived" are the client's; "recorded" is the event row's
# recorded_at; the others are stamped in the web process by traced_application.
STAGES = (
    ("request_in", "sent", "in"),  # the POST on the wire, uvicorn, until the app is called
    ("view_to_insert", "in", "recorded"),  # Django, token auth, DRF parsing and validation
    ("insert_to_commit", "recorded", "committed"),  # the event insert, the rest of the view, the commit
    ("commit_to_decide", "committed", "decide"),  # the on-commit hooks before the decision
    ("decision", "decide", "decision_committed"),  # facts, evaluation, claim, presentations, commit
    ("dispatch", "decision_committed", "dispatched"),  # the offer.presented events' hook (a task queued)
    ("to_handover", "dispatched", "handover"),  # the rest of the decision's on-commit hooks
    ("loop_wait", "handover", "sending"),  # the frames wait for the server's event loop and its sender
    (
        "who_listens",
        "sending",
        "group_send",
    ),  # the sender's look-up of the groups with members (the core layer)
    ("layer", "group_send", "consumer"),  # the channel layer's send, Redis, the consumer's receive loop
    ("socket", "consumer", "arrived"),  # the consumer's send_json, the socket write, the client's read
)


def traced_application() -> Any:
    """The web process's application (``uvicorn --factory``) with each stage of an
    offer's way stamped into its frame (``trace``: wall-clock seconds, one clock on
    one machine): the request's arrival, the commit of its transaction, the
    decision's start, the frames' hand-over to the event loop, the sender taking
    them, the channel layer's group_send and the consumer receiving the message.
    Wrappers around the product's functions, in this process only: nothing the
    product sends changes unless it runs under this factory."""
    import contextvars

    from config.asgi import application  # sets Django up: the imports below need the models

    # isort: split
    from agents.consumers import DesktopConsumer
    from crm import realtime
    from crm.services import event_dispatch
    from policies import engine

    stamps: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("trace", default=None)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            stamps.set({"in": time.time()})  # the view's thread runs in a copy of this context
        await application(scope, receive, send)

    committed = event_dispatch._DispatchOnCommit.__call__

    def on_commit(self: Any) -> None:
        trace = stamps.get()
        if trace is None:
            committed(self)
        elif "committed" not in trace:
            trace["committed"] = time.time()  # the request's commit
            committed(self)
        else:  # the decision's commit: its offer.presented events handed to their listeners
            trace["decision_committed"] = time.time()
            committed(self)
            trace["dispatched"] = time.time()

    event_dispatch._DispatchOnCommit.__call__ = on_commit  # type: ignore[method-assign]

    decide = engine.decide

    def traced_decide(event: Any, **kwargs: Any) -> Any:
        trace = stamps.get()
        if trace is not None:
            trace.setdefault("decide", time.time())
        return decide(event, **kwargs)

    engine.decide = traced_decide  # type: ignore[assignment]

    send_many_now = realtime.send_many_now

    def traced_send_many_now(messages: list[tuple[str, dict[str, Any]]]) -> None:
        trace = {**(stamps.get() or {}), "handover": time.time()}
        for _, message in messages:
            if message.get("event") == "offer.presented":
                message["trace"] = dict(trace)
        send_many_now(messages)

    realtime.send_many_now = traced_send_many_now  # type: ignore[assignment]

    send_all = realtime._send_all

    async def traced_send_all(layer: Any, messages: list[tuple[str, dict[str, Any]]], **kwargs: Any) -> None:
        now = time.time()
        for _, message in messages:
            message.get("trace", {}).setdefault("sending", now)
        if kwargs.get("pipelined") and hasattr(layer, "_get_layer"):
            # The web process's pub/sub pipeline publishes at once (no look-up first, no
            # group_send): stamped here, before the messages are serialized.
            for _, message in messages:
                message.get("trace", {})["group_send"] = now
            await send_all(layer, messages, **kwargs)
            return
        group_send = layer.group_send

        async def traced_group_send(group: str, message: dict[str, Any]) -> None:
            message.get("trace", {})["group_send"] = time.time()
            await group_send(group, message)

        layer.group_send = traced_group_send
        try:
            await send_all(layer, messages, **kwargs)
        finally:
            del layer.group_send

    realtime._send_all = traced_send_all  # type: ignore[assignment]

    crm_event = DesktopConsumer.crm_event

    async def traced_crm_event(self: Any, message: dict[str, Any]) -> None:
        if "trace" in message:
            message["trace"]["consumer"] = time.time()
        await crm_event(self, message)

    DesktopConsumer.crm_event = traced_crm_event  # type: ignore[method-assign]
    return app


def stages(measured: dict[str, Any], at: Any) -> dict[str, Any]:
    """p50 and p99 per stage (ms) over the offers whose frames carried a trace."""
    from crm.models import BusinessEvent
    from policies.models import OfferPresentation

    wall, perf = measured["clock"]
    traces: dict[int, dict[str, float]] = measured["traces"]
    events = dict(OfferPresentation.objects.filter(pk__in=list(traces)).values_list("pk", "event_id"))
    recorded = dict(
        BusinessEvent.objects.filter(pk__in=set(events.values())).values_list("pk", "recorded_at")
    )
    by_stage: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    by_stage["api_response"] = []
    for pk, trace in traces.items():
        event_id = events.get(pk)
        if event_id is None or event_id not in measured["sent"]:
            continue
        moments = dict(trace)
        moments["sent"] = wall - (perf - measured["sent"][event_id])
        moments["answered"] = wall - (perf - measured["answered"][event_id])
        moments["arrived"] = wall - (perf - measured["arrived"][pk])
        moments["recorded"] = recorded[event_id].timestamp()
        for name, start, end in (*STAGES, ("api_response", "sent", "answered")):
            if start in moments and end in moments:
                by_stage[name].append((moments[end] - moments[start]) * 1000)
    return {
        "stages_ms": {
            name: [round(statistics.median(values), 2), round(percentile(values, 0.99), 2)]
            for name, values in by_stage.items()
            if values
        },
        "traced": len(by_stage["api_response"]),
    }
