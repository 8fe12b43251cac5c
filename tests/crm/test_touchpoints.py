from __future__ import annotations

import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from crm import services
from crm.models import (
    Customer,
    Interaction,
    SourceRecord,
    TouchpointBatch,
    TouchpointResult,
)
from tests.conftest import api_as, make_customer
from tests.touchpoint_data import (
    apply_all,
    body_of,
    profile,
    receive,
    signed_headers,
    statuses,
    visit,
)

pytestmark = pytest.mark.django_db


# --- Intake ---------------------------------------------------------------------------------


def test_each_item_is_checked_on_its_own_and_the_valid_ones_are_stored(web):
    items = [
        visit("v-1", "dave@example.com"),
        {"record_kind": "interaction", "payload": {}},  # no external id
        {"external_id": "v-3", "record_kind": "fax", "payload": {}},
        {**visit("v-4", "dave@example.com"), "occurred_at": "2026-03-01T10:00:00"},  # naive
        profile("p-5", "K5", no_calls="perhaps"),  # the mapping refuses the value
        "not an object",
        {**visit("v-7", "dave@example.com"), "colour": "blue"},
        visit("v-8", "erin@example.org"),
    ]
    batch = receive(web, items)

    assert (batch.submitted, batch.accepted, batch.duplicates, batch.refused) == (8, 2, 0, 6)
    by_index = {e["index"]: e for e in batch.intake_errors}
    assert set(by_index) == {1, 2, 3, 4, 5, 6}
    assert list(by_index[1]["errors"]) == ["external_id"]
    assert list(by_index[2]["errors"]) == ["record_kind"]
    assert "no time zone" in by_index[3]["errors"]["occurred_at"][0]
    assert by_index[3]["external_id"] == "v-4"
    assert "yes or no" in by_index[4]["errors"]["payload.no_calls"][0]
    assert list(by_index[5]["errors"]) == ["item"]
    assert list(by_index[6]["errors"]) == ["colour"]
    assert sorted(statuses(web)) == ["v-1", "v-8"]


def test_a_result_sent_twice_is_stored_once(web):
    first = receive(web, [visit("v-1", "dave@example.com"), visit("v-1", "dave@example.com")])
    again = receive(web, [visit("v-1", "dave@example.com"), visit("v-2", "dave@example.com")])

    assert (first.accepted, first.duplicates) == (1, 1)
    assert (again.accepted, again.duplicates) == (1, 1)
    assert TouchpointResult.objects.filter(source_system=web).count() == 2


def test_a_batch_over_the_limit_is_refused_whole(web):
    with pytest.raises(services.customers.ValidationError) as refused:  # type: ignore[attr-defined]
        receive(web, [visit(f"v-{i}", "dave@example.com") for i in range(1001)])
    assert "at most 1000" in str(refused.value)
    assert not TouchpointBatch.objects.exists()


def test_a_record_kind_without_mappings_is_refused_naming_the_fix(web):
    batch = receive(web, [{"external_id": "x", "record_kind": "customer", "payload": {}}])
    assert batch.accepted == 1  # customers are mapped
    ivr = services.source_system_create(code="ivr2", name="IVR", kind="ivr")
    batch = receive(ivr, [{"external_id": "x", "record_kind": "customer", "payload": {}}])
    assert batch.refused == 1
    assert "ask an administrator" in batch.intake_errors[0]["errors"]["record_kind"][0]


def test_a_file_import_is_a_batch_with_its_origin_and_name(web):
    batch = services.touchpoint_batch_receive(
        source=web, items=[visit("v-1", "dave@example.com")], origin="file", file_name="history.csv"
    )
    assert (batch.origin, batch.file_name, batch.accepted) == ("file", "history.csv", 1)


# --- API ------------------------------------------------------------------------------------


def post(client: APIClient, code: str, items: list[Any], **headers: Any) -> Any:
    return client.post(
        f"/api/v1/touchpoints/{code}/results", data=body_of(items), content_type="application/json", **headers
    )


def test_the_source_posts_a_batch_and_reads_its_progress(web, web_user, dave_customer):
    client = api_as(web_user)
    response = post(client, "web", [visit("v-1", "dave@example.com"), {"external_id": "", "payload": {}}])

    assert response.status_code == 202
    assert response.json()["accepted"] == 1
    assert response.json()["refused"] == 1
    assert response.json()["errors"][0]["index"] == 1
    batch_id = response.json()["batch"]

    progress = client.get(f"/api/v1/touchpoints/web/batches/{batch_id}").json()
    assert (progress["received"], progress["pending"], progress["applied"]) == (1, 1, 0)
    assert progress["completed_at"] is None

    apply_all()
    progress = client.get(f"/api/v1/touchpoints/web/batches/{batch_id}").json()
    assert (progress["pending"], progress["applied"]) == (0, 1)
    assert progress["completed_at"] is not None


def test_a_payload_is_stored_as_sent_whatever_its_numbers_and_text(web, web_user, dave_customer):
    # The body is parsed with orjson, which reads an integer past 64 bits as a float:
    # such a body goes to the standard library, and the inbox keeps every digit.
    item = visit("v-1", "dave@example.com")
    item["payload"] |= {
        "loyalty_no": 123456789012345678901234567890,
        "ratio": 0.1,
        "note": "Zoë “quoted” 東京",
    }
    response = post(api_as(web_user), "web", [item])

    assert response.status_code == 202
    stored = TouchpointResult.objects.get(external_id="v-1").payload
    assert stored["loyalty_no"] == 123456789012345678901234567890
    assert isinstance(stored["loyalty_no"], int)
    assert (stored["ratio"], stored["note"]) == (0.1, "Zoë “quoted” 東京")


def test_another_sources_token_gets_403_and_an_unknown_source_404(web, frank):
    assert post(api_as(frank), "web", [visit("v-1", "dave@example.com")]).status_code == 403
    assert post(api_as(frank), "nowhere", [visit("v-1", "dave@example.com")]).status_code == 404
    web.active = False
    web.save()
    assert post(api_as(frank), "web", [visit("v-1", "dave@example.com")]).status_code == 404
    assert not TouchpointResult.objects.exists()


def test_a_malformed_body_or_unknown_parameter_is_a_400(web, web_user):
    client = api_as(web_user)
    url = "/api/v1/touchpoints/web/results"
    assert client.post(url, data=b"{nope", content_type="application/json").status_code == 400
    assert client.post(url, data=b'{"items": []}', content_type="application/json").status_code == 400
    assert client.post(url, data=b'{"results": []}', content_type="application/json").status_code == 400
    response = client.post(url + "?dry_run=1", data=body_of([]), content_type="application/json")
    assert response.status_code == 400
    assert "dry_run" in response.json()
    assert client.get("/api/v1/touchpoints/web/batches/1?page=2").status_code == 400


def test_a_body_over_the_servers_limit_is_a_413(web, web_user, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    items = [visit(f"v-{i}", "dave@example.com") for i in range(20)]
    response = post(api_as(web_user), "web", items)
    assert response.status_code == 413
    assert "fewer results" in response.json()["detail"]


@pytest.mark.parametrize("cache_lost", [False, True], ids=["replay", "replay-after-redis-restart"])
def test_a_signed_source_accepts_a_good_signature_once(web, web_user, cache_lost):
    """The signatures seen live in PostgreSQL: a Redis restart (here, the cache
    emptied between the two) must not let a captured request through a second time."""
    from django.core.cache import cache

    web.signing_secret = "s3cret"
    web.save()
    client = api_as(web_user)
    body = body_of([visit("v-1", "dave@example.com")])
    headers: dict[str, Any] = dict(signed_headers("s3cret", body))
    url = "/api/v1/touchpoints/web/results"

    assert client.post(url, data=body, content_type="application/json", **headers).status_code == 202
    if cache_lost:
        cache.clear()
    replay = client.post(url, data=body, content_type="application/json", **headers)
    assert replay.status_code == 401
    assert "used before" in replay.json()["detail"]
    assert TouchpointBatch.objects.count() == 1


def test_signatures_are_forgotten_only_once_no_copy_could_pass_the_clock(web, settings):
    import datetime as dt

    from django.utils import timezone

    from crm.models import SeenSignature

    assert services.touchpoint_signature_remember(source=web, digest="a" * 64)
    assert not services.touchpoint_signature_remember(source=web, digest="a" * 64)
    assert services.touchpoint_signature_remember(source=web, digest="b" * 64)
    SeenSignature.objects.filter(digest="a" * 64).update(seen_at=timezone.now() - dt.timedelta(minutes=12))

    assert services.touchpoint_signatures_prune() == 1
    assert list(SeenSignature.objects.values_list("digest", flat=True)) == ["b" * 64]
    # Kept past the 5 minutes either side of the clock in which its request passes.
    later = timezone.now() + dt.timedelta(minutes=10)
    assert services.touchpoint_signatures_prune(now=later) == 0
    assert settings.CELERY_BEAT_SCHEDULE["prune-touchpoint-signatures"]["task"] == (
        "crm.tasks.touchpoint_signatures_prune"
    )


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "X-Signature-Timestamp"),
        ({"secret": "wrong"}, "does not match"),
        ({"at": int(time.time()) - 600}, "from our clock"),
        ({"HTTP_X_SIGNATURE_TIMESTAMP": "yesterday", "HTTP_X_SIGNATURE": "sha256=00"}, "unix seconds"),
        ({"tamper": True}, "does not match"),
    ],
)
def test_a_signed_source_refuses_a_missing_bad_or_old_signature(web, web_user, headers, says):
    web.signing_secret = "s3cret"
    web.save()
    body = body_of([visit("v-1", "dave@example.com")])
    sent: dict[str, Any]
    if "secret" in headers or "at" in headers or "tamper" in headers:
        sent = signed_headers(headers.get("secret", "s3cret"), body, at=headers.get("at"))
        if headers.get("tamper"):
            body = body.replace(b"v-1", b"v-2")
    else:
        sent = headers
    response = api_as(web_user).post(
        "/api/v1/touchpoints/web/results", data=body, content_type="application/json", **sent
    )
    assert response.status_code == 401
    assert says in response.json()["detail"]
    assert not TouchpointResult.objects.exists()


def test_the_schema_documents_every_status_of_the_endpoints(carol):
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    post_op = schema["paths"]["/api/v1/touchpoints/{source_code}/results"]["post"]
    get_op = schema["paths"]["/api/v1/touchpoints/{source_code}/batches/{batch_id}"]["get"]
    assert {"202", "400", "401", "403", "404", "413", "429"} <= set(post_op["responses"])
    assert {"200", "400", "401", "403", "404"} <= set(get_op["responses"])
    assert "201" not in post_op["responses"]
    assert all(r.get("description") for r in post_op["responses"].values())
    assert all(r.get("description") for r in get_op["responses"].values())


# --- The administrator's decisions ----------------------------------------------------------


def test_a_rejected_result_is_applied_once_retried_after_its_mapping_is_fixed(web, dave_customer):
    item = visit("v-1", "dave@example.com")
    item["payload"]["channel"] = "kiosk"  # unmapped at first: the mapping refuses it at intake...
    batch = receive(web, [item])
    assert batch.refused == 1
    receive(web, [visit("v-2", "dave@example.com")])
    TouchpointResult.objects.filter(external_id="v-2").update(
        payload={**item["payload"], "direction": "sideways"}
    )
    apply_all()
    assert statuses(web) == {"v-2": "rejected"}  # ...and a bad value slipped in later is rejected at apply

    TouchpointResult.objects.filter(external_id="v-2").update(
        payload=visit("v-2", "dave@example.com")["payload"]
    )
    assert (
        services.touchpoint_results_retry(result_ids=TouchpointResult.objects.values_list("pk", flat=True))
        == 1
    )
    result = TouchpointResult.objects.get(external_id="v-2")
    assert (result.status, result.attempts, result.error) == ("pending", 0, None)
    apply_all()
    assert statuses(web) == {"v-2": "applied"}
    assert Interaction.objects.filter(external_id="v-2").count() == 1


def test_review_attaches_to_a_candidate_and_links_the_key(web, dave_customer):
    twin = make_customer(given_name="David", phones=[])
    receive(web, [visit("v-1", "dave@example.com", key="W7")])
    apply_all()
    result = TouchpointResult.objects.get(external_id="v-1")

    with pytest.raises(services.customers.ValidationError):  # type: ignore[attr-defined]
        services.touchpoint_review_attach(result_id=result.pk, customer_id=dave_customer.pk + 999)
    services.touchpoint_review_attach(result_id=result.pk, customer_id=twin.pk)
    apply_all()

    assert Interaction.objects.get(external_id="v-1").customer_id == twin.pk
    assert SourceRecord.objects.get(source_system=web, external_key="W7").customer_id == twin.pk


def test_results_behind_one_in_review_wait_for_it_then_apply_in_order(web, dave_customer):
    twin = make_customer(given_name="David", phones=[])  # dave's e-mail: the first result is ambiguous
    receive(web, [visit("v-1", "dave@example.com", key="W7", sequence=1)])
    receive(web, [profile("p-2", "W7", sequence=2, tier="G"), visit("v-3", "", key="W7", sequence=3)])
    receive(web, [visit("v-0", "", key="W7", sequence=0), visit("x-1", "erin@example.org")])
    apply_all()
    # v-0 comes before the one in review, so nothing holds it (by its key alone it
    # would be a new customer, who needs a name: rejected); x-1 has no key at all.
    assert statuses(web) == {"v-0": "rejected", "v-1": "review", "p-2": "pending", "v-3": "pending",
                             "x-1": "rejected"}  # fmt: skip

    services.touchpoint_review_attach(
        result_id=TouchpointResult.objects.get(external_id="v-1").pk, customer_id=twin.pk
    )
    apply_all()
    after = statuses(web)
    assert [after[k] for k in ("v-1", "p-2", "v-3")] == ["applied"] * 3
    # Everything after it reached the customer the administrator chose, by the key it linked.
    assert set(
        Interaction.objects.filter(external_id__in=["v-1", "v-3"]).values_list("customer_id", flat=True)
    ) == {twin.pk}
    assert Customer.objects.get(pk=twin.pk).tier == "gold"


def test_a_result_without_a_sequence_comes_before_the_numbered_ones_of_its_key(web, dave_customer):
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    receive(web, [profile("p-5", "K1", sequence=-5, tier="S"), profile("p-n", "K1", tier="G")])
    claim = services.touchpoint_claims.touchpoint_results_claim  # type: ignore[attr-defined]
    # Not read as 0 (which would put it after -5): unnumbered first, then by number.
    assert [c.external_id for c in claim(limit=10, token="peek")] == ["p-n"]


def test_review_creates_a_new_customer_from_the_result(web, dave_customer):
    make_customer(given_name="David", phones=[])
    receive(web, [profile("p-1", "K1", first="Davina", last="Miller", email="dave@example.com")])
    apply_all()
    result = TouchpointResult.objects.get(external_id="p-1")
    assert result.status == "review"

    services.touchpoint_review_create_new(result_id=result.pk)
    apply_all()

    result.refresh_from_db()
    assert result.status == "applied"
    assert Customer.objects.get(given_name="Davina").pk == result.customer_id
    assert SourceRecord.objects.get(external_key="K1").customer_id == result.customer_id


def test_the_admin_lists_results_and_retries_from_an_action(web, dave_customer, carol, client):
    item = visit("v-1", "dave@example.com")
    del item["payload"]["direction"]
    receive(web, [item])
    apply_all()
    client.force_login(carol)
    page = client.get("/admin/crm/touchpointresult/?status__exact=rejected")
    assert page.status_code == 200
    assert b"v-1" in page.content
    result = TouchpointResult.objects.get()
    response = client.post(
        "/admin/crm/touchpointresult/", {"action": "retry", "_selected_action": [result.pk]}, follow=True
    )
    assert response.status_code == 200
    assert TouchpointResult.objects.get().status == "pending"
    assert client.get(f"/admin/crm/touchpointbatch/{result.batch_id}/change/").status_code == 200
