"""Schemathesis over the app's own OpenAPI schema (in-process, every route, with and without the key, a bounded
number of generated requests per route): no 5xx, every response conforms to the schema it declares (4xx bodies
are the error shape), and the schema tells the truth — every route accepts some of the requests generated from it
(Schemathesis's "validation mismatch" is all of them rejected). Regression tests for what it found follow."""

from __future__ import annotations

from collections import defaultdict

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from trlm.guard.defense import DefenseArgs
from trlm.serve.app import ROUTES, create_app
from trlm.serve.schemas import NON_BLANK
from trlm.serve.service import ServeConfig, Service

from .test_app import KEY, KeywordFilter, call
from .test_steering import random_directions

EXAMPLES = 8  # per route: about 2 minutes on 2 idle cores
SEEN: dict[str, list[int]] = defaultdict(list)  # route -> statuses of generated requests sent with the key


@pytest.fixture(scope="module")
def fuzz_app(smol, tmp_path_factory):
    dirs = random_directions(tmp_path_factory.mktemp("dirs") / "d", smol)
    cfg = ServeConfig(scorers=("trlm-fo",), api_keys=(KEY,), max_documents=3, max_pairs=2, max_prompts=2,
                      max_claims=2, max_new_tokens=3, max_body_bytes=50_000, max_tokens_per_doc=32,
                      guard_args=DefenseArgs(n=1, tau=0, max_new_tokens=3), directions=(("d", str(dirs)),),
                      request_timeout_s=120)
    return create_app(service=Service(cfg, engine=smol, guard_filter=KeywordFilter()))


class WithoutLifespan:
    """The app without its lifespan: Schemathesis's ASGI client starts and stops the app around every call, and the
    app's shutdown stops its engine thread for good (as a server's shutdown should)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", WithoutLifespan(fuzz_app),
                                            headers={"Authorization": f"Bearer {KEY}"})
    schema.config.generation.update(modes=[GenerationMode.POSITIVE], max_examples=EXAMPLES, deterministic=True)
    return schema


OPERATIONS = [("GET", p) for p in ("/health", "/metrics", "/v1/models")] + [
    ("POST", p) for p in ROUTES if p not in ("/health", "/metrics", "/v1/models")]


def _error_shape(response) -> None:
    body = response.json()
    assert set(body) == {"message", "type", "request_id"} and all(isinstance(v, str) and v for v in body.values())
    rid = response.headers["x-request-id"]
    assert (rid[0] if isinstance(rid, list) else rid) == body["request_id"]


@pytest.mark.parametrize("method,path", OPERATIONS)
def test_generated_requests_get_no_5xx_and_conforming_answers(api_schema, method, path):
    op = api_schema[path][method]

    @given(case=op.as_strategy())
    @settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES, database=None,
              derandomize=True, phases=[Phase.explicit, Phase.generate])  # no shrinking: a bounded run
    def run(case):
        with_key = case.call(headers={"Authorization": f"Bearer {KEY}"}, timeout=300)
        case.validate_response(with_key)  # no 5xx; status, content type, headers and body as declared
        SEEN[f"{method} {path}"].append(with_key.status_code)
        if with_key.status_code >= 400:
            _error_shape(with_key)
        without = case.call(headers={}, timeout=300)
        case.validate_response(without)
        if path == "/health":
            assert without.status_code == 200
        else:
            assert without.status_code == 401, without.text
            _error_shape(without)

    run()


def test_every_route_accepts_requests_generated_from_its_schema(fuzz_app):
    if not SEEN:
        pytest.skip("runs after the fuzzer in this module")
    routes = {f"{m.upper()} {p}" for p, ops in fuzz_app.openapi()["paths"].items() for m in ops}
    assert set(SEEN) == routes == {f"{m} {p}" for m, p in OPERATIONS}  # every route of the app was fuzzed
    rejected = {r: s for r, s in SEEN.items() if not any(200 <= c < 300 for c in s)}
    assert not rejected, f"every generated request refused (the schema is looser than the server): {rejected}"


# ------------------------------------------------------------------------------------------ regressions


def test_published_schema_carries_the_servers_limits(fuzz_app, smol):
    comp = fuzz_app.openapi()["components"]["schemas"]
    assert comp["RerankRequest"]["properties"]["documents"]["maxItems"] == 3
    assert comp["RerankRequest"]["properties"]["query"]["pattern"] == NON_BLANK
    assert comp["ChatRequest"]["properties"]["max_tokens"]["anyOf"][0]["maximum"] == 3
    assert comp["ChatRequest"]["properties"]["model"]["enum"] == [smol.name, None]
    assert comp["SteerSpec"]["properties"]["concept"]["enum"] == [3, 7]
    assert comp["FactcheckRequest"]["properties"]["checker"]["enum"] == ["minilm-features", None]
    assert comp["ScoreRequest"]["properties"]["direction"]["enum"] == ["forward", None]
    assert "ErrorResponse" in comp["ChatRequest"] or all(
        "ErrorResponse" in str(op["responses"]["422"]) for ops in fuzz_app.openapi()["paths"].values()
        for op in ops.values())


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'),
    ("/v1/completions", b'{"prompt": "hi", "top_p": Infinity}'),
    ("/v1/factcheck", b'{"document": "d", "claims": ["c"], "threshold": NaN}'),
])
def test_non_finite_numbers_are_422_not_500(fuzz_app, path, body):
    r = call(fuzz_app, "POST", path, content=body, headers={"Authorization": f"Bearer {KEY}",
                                                           "content-type": "application/json"})
    assert r.status_code == 422, r.text
    _error_shape(r)


# what the fuzzer found (each a schema-valid request the server refused, or a response its schema did not declare)


def _with_key(app, path, body):
    return call(app, "POST", path, json=body, headers={"Authorization": f"Bearer {KEY}"})


def test_found_no_max_tokens_uses_the_servers_limit_when_it_is_below_the_default(fuzz_app):
    r = _with_key(fuzz_app, "/v1/completions", {"prompt": "Traceback"})  # was 422: default 64 > limit 3
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
    r = _with_key(fuzz_app, "/v1/chat/completions", {"messages": [{"content": "", "role": "user"}]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path,body,field", [
    ("/v1/rerank", {"documents": [""], "query": "Traceback"}, "documents.0"),  # the string form had no pattern
    ("/v1/cite", {"claims": ["\u001f"], "sentences": ["0"]}, "claims"),  # \x1f: blank for Python, not for ECMA \s
])
def test_found_blank_texts_are_outside_the_published_schema_and_422(fuzz_app, path, body, field):
    import re

    r = _with_key(fuzz_app, path, body)
    assert r.status_code == 422 and f"field '{field}" in r.json()["message"]
    assert not re.search(NON_BLANK, "\u001f \u0085\t") and re.search(NON_BLANK, "\u001fa")


def test_found_factcheck_null_pairs_are_not_published_as_valid(fuzz_app):
    fc = fuzz_app.openapi()["components"]["schemas"]["FactcheckRequest"]["properties"]
    assert fc["pairs"]["type"] == "array" and "anyOf" not in fc["pairs"]  # {"pairs": null} was schema-valid
    r = _with_key(fuzz_app, "/v1/factcheck", {"pairs": None})
    assert r.status_code == 422 and "'pairs'" in r.json()["message"]


def test_found_declared_content_types_of_metrics_errors_and_event_streams(fuzz_app):
    paths = fuzz_app.openapi()["paths"]
    assert set(paths["/metrics"]["get"]["responses"]["401"]["content"]) == {"application/json"}  # was text/plain
    event = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert event["required"] == ["data"]  # each event, not the stream as one string
