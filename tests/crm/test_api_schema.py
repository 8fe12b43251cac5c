"""The OpenAPI schema is a contract: what it says is what the API does.

Schemathesis generates requests from the live schema (valid ones, and ones that
break it on purpose) and sends them, as staff and as a self-service customer,
through the real Django application and database; every response must be a
documented status code with a documented content type, body and headers, no
request may make the server fail, and a request the schema calls invalid must
be refused.

Runs are derandomized so CI sees the same cases every time; set
``CRM_SCHEMA_EXPLORE=1`` to draw new ones (and ``CRM_SCHEMA_EXAMPLES`` for more).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.urls import resolve
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from rest_framework.test import APIRequestFactory
from schemathesis.core.failures import FailureGroup

from crm import services
from crm.models import Customer, Product, SourceSystem, User
from tests.conftest import api_as

EXAMPLES = int(os.environ.get("CRM_SCHEMA_EXAMPLES", "25"))
EXPLORE = os.environ.get("CRM_SCHEMA_EXPLORE") == "1"
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]


@pytest.fixture
def wsgi_app(settings: Any) -> Iterator[Any]:
    """The project's WSGI application, called in this test's transaction: the
    per-request connection clean-up is off, as Django's own test client does."""
    settings.ALLOWED_HOSTS = ["localhost"]
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@dataclass
class Run:
    cases: int = 0
    failures: list[str] = field(default_factory=list)

    def report(self) -> str:
        distinct = sorted(set(self.failures))
        return f"{self.cases} cases, {len(distinct)} distinct failures:\n" + "\n\n".join(distinct[:20])


def _conformance(schema: Any, *, as_user: User, mode: schemathesis.GenerationMode) -> Run:
    run = Run()
    _, secret = services.api_token_create(user=as_user, name="conformance")
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=not EXPLORE,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def send(case: Any) -> None:
            run.cases += 1
            token = secret
            if case.method == "DELETE":
                # Revoking the token sent is what DELETE /auth/token/ does: give it its own.
                _, token = services.api_token_create(user=as_user, name="to revoke")
            try:
                case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
            except FailureGroup as exc:
                run.failures.append(
                    f"{as_user.username} {case.operation.label}: {str(exc).split('Reproduce')[0]}"
                )

        try:
            send()
        except Unsatisfiable:
            # Nothing of this operation can be made invalid (no parameters, no body).
            assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
    return run


@pytest.fixture
def live_schema(wsgi_app: Any) -> Any:
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)


@pytest.fixture
def records(
    bob: User,
    dave_customer: Customer,
    erin_customer: Customer,
    ivr: SourceSystem,
    checking: Product,
) -> None:
    """Something to find: two customers, an account, a contact, a change."""
    services.account_open(customer_id=dave_customer.pk, product_code=checking.code, account_number="ACC-1001")
    services.customer_update(
        customer_id=dave_customer.pk,
        expected_version=dave_customer.version,
        changes={"given_name": "David"},
        actor=bob,
    )


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_the_api_answers_as_its_schema_says_to_staff_and_customers(
    live_schema: Any, records: None, bob: User, dave: User, mode: schemathesis.GenerationMode
) -> None:
    for persona in (bob, dave):
        run = _conformance(live_schema, as_user=persona, mode=mode)
        print(
            f"schemathesis {mode.value} as {persona.username}: "
            f"{run.cases} cases, {len(run.failures)} failures"
        )
        assert run.cases >= EXAMPLES * 10, run.report()
        assert not run.failures, run.report()


# --- The query string is read strictly, as the schema says --------------------------


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "patch", "put", "delete"):
                yield path, method, operation


def test_every_operation_documents_the_query_parameters_it_reads(api_schema: dict[str, Any]) -> None:
    factory = APIRequestFactory()
    for path, method, operation in _operations(api_schema):
        url = path.replace("{id}", "1")
        match = resolve(url)
        view_class = match.func.cls  # type: ignore[attr-defined]
        actions = getattr(match.func, "actions", None)
        view = view_class(**getattr(match.func, "initkwargs", {}))
        if actions:
            view.action_map, view.action = actions, actions[method]
        view.request = view.initialize_request(getattr(factory, method)(url))
        view.format_kwarg = None
        documented = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        assert documented == view.allowed_query_params(), f"{method.upper()} {path}"


def test_every_operation_refuses_a_query_parameter_it_does_not_read(
    api_schema: dict[str, Any], bob: User, dave_customer: Customer, db: None
) -> None:
    client = api_as(bob)
    for path, method, _ in _operations(api_schema):
        url = path.replace("{id}", str(dave_customer.pk)) + "?chanel=phone"
        response = getattr(client, method)(url, {}, format="json")
        assert response.status_code == 400, f"{method.upper()} {path}: {response.status_code}"
        assert "Unknown query parameter" in response.json()["chanel"][0]


@pytest.fixture
def api_schema(db: None) -> dict[str, Any]:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-any-return]


def test_every_error_status_is_documented_with_a_body(api_schema: dict[str, Any]) -> None:
    for path, method, operation in _operations(api_schema):
        codes = set(operation["responses"])
        assert {"400", "401"} <= codes, f"{method.upper()} {path}"
        if "{id}" in path:
            assert "404" in codes, f"{method.upper()} {path}"
        for code, response in operation["responses"].items():
            if code.startswith(("4", "5")):
                assert "application/json" in response.get("content", {}), f"{method.upper()} {path} {code}"
    patch = api_schema["paths"]["/api/v1/customers/{id}/"]["patch"]["responses"]
    assert {"403", "412", "428"} <= set(patch)
    assert "304" in api_schema["paths"]["/api/v1/customers/{id}/"]["get"]["responses"]
    assert "429" in api_schema["paths"]["/api/v1/auth/token/"]["post"]["responses"]


def test_a_path_id_that_is_not_a_number_gets_a_json_404(bob: User) -> None:
    response = api_as(bob).get("/api/v1/customers/not-a-number.json/")
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/json")
    assert "detail" in response.json()


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("page_size=abc", "page_size"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page=-1", "page"),
        ("page=last", "page"),
        ("status=", "status"),
        ("status=frozen", "status"),
        ("customer=abc", "customer"),
    ],
)
def test_a_malformed_list_parameter_is_refused_naming_it(bob: User, query: str, parameter: str) -> None:
    response = api_as(bob).get(f"/api/v1/accounts/?{query}")
    assert response.status_code == 400, response.content
    assert parameter in response.json()


def test_products_filter_on_true_or_false_only(bob: User, checking: Product) -> None:
    client = api_as(bob)
    assert client.get("/api/v1/products/?active=maybe").status_code == 400
    assert client.get("/api/v1/products/?active=true").json()["count"] == 1
    assert client.get("/api/v1/products/?active=false").json()["count"] == 0


def test_a_forged_timeline_cursor_is_refused_naming_it(bob: User, dave_customer: Customer) -> None:
    import base64

    forged = base64.b64encode(b"o=0&r=0&p=not-a-time").decode()
    client = api_as(bob)
    for cursor in (forged, "%%%", "Zm9v"):
        response = client.get(f"/api/v1/customers/{dave_customer.pk}/timeline/", {"cursor": cursor})
        assert response.status_code == 400, (cursor, response.content)
        assert "cursor" in response.json()


def test_accounts_of_a_customer_the_caller_cannot_see_are_an_empty_list(
    dave: User, erin_customer: Customer, checking: Product
) -> None:
    services.account_open(customer_id=erin_customer.pk, product_code=checking.code, account_number="ACC-2001")
    response = api_as(dave).get(f"/api/v1/accounts/?customer={erin_customer.pk}")
    assert response.status_code == 200
    assert response.json()["results"] == []
