"""The OpenAPI schema a server publishes (``/openapi.json``) carries its own limits, so that what the schema allows
is what the server accepts: list lengths (``--max-documents``, ``--max-pairs``, ``--max-prompts``,
``--max-claims``), ``max_tokens`` up to ``--max-new-tokens``, the served model, scorer, checker and steering
names, and no ``steer`` where nothing can be steered. (Non-blank texts are in the body models themselves.)
What a schema cannot say stays a 4xx naming the field: prompts x n over ``--max-prompts``, a text over the
model's window, a body over ``--max-body-bytes``.
"""

from __future__ import annotations


def _enum(prop: dict, names) -> None:
    prop.pop("anyOf", None)
    prop["enum"] = [*names, None]


def _array(prop: dict) -> dict:
    """The array branch of a property (itself, or its ``anyOf`` member of type array)."""
    if prop.get("type") == "array":
        return prop
    return next(p for p in prop.get("anyOf", ()) if p.get("type") == "array")


def limits(schema: dict, service) -> dict:
    """``schema`` (FastAPI's) with ``service``'s limits written in."""
    c, comp = service.config, schema["components"]["schemas"]
    rr = comp["RerankRequest"]["properties"]
    rr["documents"]["maxItems"] = c.max_documents
    _enum(rr["model"], service.scorers)
    sr = comp["ScoreRequest"]["properties"]
    sr["pairs"]["maxItems"] = c.max_pairs
    _enum(sr["model"], [service.model_name])
    if not service.engine.supports("reverse"):
        sr["direction"] = {"enum": ["forward", None], "description": sr["direction"].get("description", "")}
    for name in ("CompletionRequest", "ChatRequest"):
        props = comp[name]["properties"]
        _enum(props["model"], [service.model_name])
        props["n"]["maximum"] = c.max_prompts
        for f in ("max_tokens", "max_completion_tokens"):
            if f in props:
                props[f]["anyOf"] = [{"type": "integer", "minimum": 1, "maximum": c.max_new_tokens}, {"type": "null"}]
        if service.direction_sets and service.steerable:
            _array(props["steer"])["maxItems"] = 8
        else:
            props["steer"] = {"type": "null", "description": "No directions served (--directions NAME=DIR)."}
    _array(comp["CompletionRequest"]["properties"]["prompt"])["maxItems"] = c.max_prompts
    if service.direction_sets:
        sp = comp["SteerSpec"]["properties"]
        sp["directions"]["enum"] = list(service.direction_sets)
        sp["concept"]["enum"] = sorted({cid for ds in service.direction_sets.values() for cid in ds.directions})
    fc = comp["FactcheckRequest"]["properties"]
    _enum(fc["checker"], service.checkers)
    for f in ("document", "claims", "pairs"):  # the two forms are told apart by which fields are present
        branch = next(b for b in fc[f].pop("anyOf") if b.get("type") != "null")
        fc[f] = {**branch, **fc[f]}
    _array(fc["claims"])["maxItems"] = c.max_claims
    _array(fc["pairs"])["maxItems"] = c.max_claims
    cr = comp["CiteRequest"]["properties"]
    cr["claims"]["maxItems"] = c.max_claims
    cr["sentences"]["maxItems"] = c.max_documents
    _enum(cr["scorer"], service.cite_scorers)
    return schema


def publish_limits(app, service) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json``) return the schema with the server's limits."""
    plain = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = limits(plain(), service)
        return app.openapi_schema

    app.openapi = openapi
