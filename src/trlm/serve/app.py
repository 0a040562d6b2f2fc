"""The FastAPI application: routes, auth, limits and errors over a :class:`~trlm.serve.service.Service`.

    app = create_app(ServeConfig(scorers=("trlm-fo",)))          # loads the models once
    uvicorn.run(app, host="127.0.0.1", port=8000)                # what `trlm serve` does

Errors are JSON ``{"message": ..., "type": ..., "request_id": ...}``; every response carries ``X-Request-ID``.
422: malformed JSON, a wrong type, a missing or unknown field, or an option this server does not implement (the
message names it) · 413: a body over ``max_body_bytes``, too many documents / pairs / prompts / claims, or a text
too long for the model · 401: missing or wrong API key · 404: an unknown route or model (the message lists the
served ones) · 429 + ``Retry-After``: the queue is full, or the key is over ``rate_limit`` · 504: no answer
within ``request_timeout_s`` · 500: a bug — logged with the request id and traceback, answered without them.
A client that disconnects cancels its request: dropped if still queued, and its rows leave the batch at the next
decoding step if it is already generating (the other rows go on unchanged). The published OpenAPI schema
carries this server's limits (:mod:`trlm.serve.spec`), so a client generated from it sends what is accepted.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
import uuid
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from trlm.core.checkpoint import ModelError
from trlm.core.ranking import rank_by_score
from trlm.core.schema import Request as ScoreReq
from trlm.serve import openai_schemas as O
from trlm.serve import schemas as S
from trlm.serve.batching import Batcher, QueueFull
from trlm.serve.routes import Api, ClientError, add_routes
from trlm.serve.service import Cancelled, GuardJob, PayloadTooLarge, RerankJob, ScoreJob, ServeConfig, Service

log = logging.getLogger("trlm.serve")

ROUTES = ("/health", "/metrics", "/v1/models", "/v1/rerank", "/v2/rerank", "/v1/score", "/v1/guard",
          "/v1/completions", "/v1/chat/completions", "/v1/factcheck", "/v1/cite")
RETRY_AFTER_S = 1
ERRORS = {401: "missing or wrong API key", 404: "unknown route or model", 405: "method not allowed",
          413: "too large", 422: "invalid request", 429: "queue full or rate limit (Retry-After)",
          500: "internal error", 504: "timeout"}


def _error(status: int, message: str, request_id: str, headers: dict | None = None) -> JSONResponse:
    kind = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
            422: "invalid_request", 429: "rate_limited", 503: "overloaded", 504: "timeout"}.get(
        status, "error" if status < 500 else "internal_error")
    return JSONResponse({"message": message, "type": kind, "request_id": request_id}, status, headers=headers)


def _estimate_tokens(text: str) -> int:
    """A cheap token estimate for the batch budget (real tokenisation happens once, in the engine thread)."""
    return len(text) // 4 + 1


class RateLimiter:
    """A token bucket per client: ``rate`` requests per second, ``burst`` at once. :meth:`take` is 0 when the
    request may go, else the seconds until it may (the Retry-After)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: dict[bytes, tuple[float, float]] = {}

    def take(self, who: bytes) -> float:
        if not self.rate:
            return 0.0
        now = self.clock()
        tokens, t = self.buckets.get(who, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - t) * self.rate)
        if tokens >= 1.0:
            self.buckets[who] = (tokens - 1.0, now)
            return 0.0
        self.buckets[who] = (tokens, now)
        if len(self.buckets) > 100_000:  # forget idle clients (their buckets are full again anyway)
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < self.burst / self.rate}
        return (1.0 - tokens) / self.rate


class _Gate:
    """Pure-ASGI outer layer: request id, auth, rate limit, metrics, and a 500 without traceback for any
    unhandled error."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service
        self.keys = [k.encode() for k in service.config.api_keys]
        self.limiter = RateLimiter(service.config.rate_limit, service.config.rate_burst)

    @staticmethod
    def _token(scope) -> bytes:
        for k, v in scope.get("headers", ()):
            if k == b"authorization":
                scheme, _, token = v.partition(b" ")
                return token.strip() if scheme.lower() == b"bearer" else b""
        return b""

    def _authorised(self, scope) -> bool:
        given = self._token(scope)
        # compare with every key, without short-circuit, in constant time per key
        return bool(given) and any([hmac.compare_digest(given, k) for k in self.keys])

    def _client(self, scope) -> bytes:
        """Who a rate limit counts: the API key, or the client address when the server has no keys."""
        return self._token(scope) if self.keys else str((scope.get("client") or ("-",))[0]).encode()

    @staticmethod
    def _declared_size(scope) -> int:
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                return int(v) if v.isdigit() else 0
        return 0

    def _counting(self, receive):
        """``receive`` that refuses (413) a body without Content-Length once it grows past the limit."""
        limit, total = self.service.config.max_body_bytes, [0]

        async def counted():
            msg = await receive()
            if msg["type"] == "http.request":
                total[0] += len(msg.get("body", b""))
                if total[0] > limit:
                    raise StarletteHTTPException(413)
            return msg

        return counted

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status, t0, m = [0], time.perf_counter(), self.service.metrics
        m.inc("trlm_in_flight", by=1)

        async def send_with_id(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
                msg = {**msg, "headers": [*msg.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(msg)

        try:
            if self.keys and path != "/health" and not self._authorised(scope):
                await _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", rid,
                             {"WWW-Authenticate": "Bearer"})(scope, receive, send_with_id)
            elif self._declared_size(scope) > self.service.config.max_body_bytes:  # refused before it is read
                await _error(413, f"request body over {self.service.config.max_body_bytes} bytes (max_body_bytes)",
                             rid)(scope, receive, send_with_id)
            elif path != "/health" and (wait := self.limiter.take(self._client(scope))):
                m.inc("trlm_rejected_total", {"batcher": "-", "reason": "rate_limit"})
                await _error(429, f"rate limit: {self.service.config.rate_limit:g} requests/s per key "
                             f"(burst {self.service.config.rate_burst}); retry after the Retry-After seconds", rid,
                             {"Retry-After": str(max(1, math.ceil(wait)))})(scope, receive, send_with_id)
            else:
                await self.app(scope, self._counting(receive), send_with_id)
        except Exception:
            log.exception("request %s (%s %s) failed", rid, scope.get("method"), path)
            if not status[0]:
                await _error(500, f"internal error; the server log has the details under request id {rid}",
                             rid)(scope, receive, send_with_id)
        finally:
            m.inc("trlm_in_flight", by=-1)
            m.inc("trlm_requests_total", {"route": route, "status": str(status[0] or 500)})
            m.observe("trlm_request_seconds", time.perf_counter() - t0, {"route": route})


def create_app(config: ServeConfig = ServeConfig(), service: Service | None = None) -> FastAPI:
    """The app over ``service`` (default: a :class:`Service` loading the models of ``config``, now)."""
    service = service or Service(config)
    config = service.config

    @asynccontextmanager
    async def lifespan(app):
        log.info("trlm serve: %s, scorers %s, batching %s", service.model_name, ", ".join(service.scorers),
                 "on" if config.batching else "off")
        yield
        await service.drain()  # uvicorn has already waited for in-flight requests; finish anything queued

    errors = {code: {"model": S.ErrorResponse, "description": what} for code, what in ERRORS.items()}
    errors[429]["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    app = FastAPI(title="trlm serve", version="1", lifespan=lifespan, responses=errors)
    app.state.service = service

    def rid(request: Request) -> str:
        return request.scope.get("state", {}).get("request_id", "-")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        parts = []
        for e in errs[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            msg = "malformed JSON" + (f" ({e['ctx']['error']})" if e.get("ctx", {}).get("error") else "") \
                if e.get("type") == "json_invalid" else e.get("msg", "invalid").removeprefix("Value error, ")
            if e.get("type") == "extra_forbidden":
                msg = "unknown field: this server does not implement it (docs/serving_api.md lists what it ignores)"
            parts.append(f"field '{loc}': {msg}" if e.get("type") != "json_invalid" else f"body: {msg}")
        more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
        if "json" not in request.headers.get("content-type", "json"):
            more += "; send the body as JSON with 'Content-Type: application/json'"
        return _error(422, "; ".join(parts) + more, rid(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        msg = {404: f"no route {request.url.path}; routes: {', '.join(ROUTES)}",
               413: f"request body over {config.max_body_bytes} bytes (max_body_bytes)"}.get(exc.status_code,
                                                                                             str(exc.detail))
        return _error(exc.status_code, msg, rid(request), getattr(exc, "headers", None))

    @app.exception_handler(ClientError)
    async def _client(request: Request, exc: ClientError):
        return _error(exc.status, exc.message, rid(request), exc.headers)

    async def submit(request: Request, batcher: Batcher, job, tokens: int, started: asyncio.Future | None = None):
        """The job's result; 429 if the queue is full, 504 on timeout; a disconnect cancels the job (queued: dropped;
        generating: its rows stop at the next step). With ``started``, returns the job's task as soon as that
        future is done (a stream's first piece): the rest arrives through the stream."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(batcher.submit(job, tokens))
        deadline = loop.time() + config.request_timeout_s

        def cancel():
            task.cancel()
            if getattr(job, "cancel", None) is not None:
                job.cancel.set()

        try:
            while True:
                waiting = {task} if started is None else {task, started}
                done, _ = await asyncio.wait(waiting, timeout=min(0.1, max(0.0, deadline - loop.time())),
                                             return_when=asyncio.FIRST_COMPLETED)
                if task in done and (started is None or task.exception() is not None):
                    return task.result()
                if done:  # a stream's first piece (or the whole job, if it was that quick): the stream goes on
                    return task
                if await request.is_disconnected():
                    cancel()
                    log.info("request %s: client disconnected; its work is cancelled", rid(request))
                    raise ClientError(499, "client closed the request")
                if loop.time() >= deadline:
                    cancel()
                    raise ClientError(504, f"no answer within {config.request_timeout_s:g} s (request_timeout_s)")
        except QueueFull:
            raise ClientError(429, f"server busy: the {batcher.name} queue is full ({config.max_queue}); retry "
                              "after the Retry-After seconds", {"Retry-After": str(RETRY_AFTER_S)}) from None
        except Cancelled:
            raise ClientError(499, "client closed the request") from None
        except PayloadTooLarge as e:
            raise ClientError(413, str(e)) from None
        except (ValueError, ModelError) as e:  # the engine refused this input (not a bug)
            raise ClientError(422, str(e)) from None
        except asyncio.CancelledError:
            cancel()
            raise

    def too_many(field: str, n: int, limit: int, what: str) -> None:
        if n > limit:
            raise ClientError(413, f"field '{field}': {n} {what}; at most {limit} per request")

    # ------------------------------------------------------------------------------------------ routes

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": service.model_name, "scorers": list(service.scorers),
                "queue": {name: b.depth for name, b in service.batchers.items()}}

    @app.get("/metrics", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                          "description": "Prometheus text format 0.0.4"}})
    async def metrics():
        for name, b in service.batchers.items():
            service.metrics.set("trlm_queue_depth", b.depth, {"batcher": name})
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", response_model=O.ModelList)
    async def models():
        cards = [O.ModelCard(id=n, kind="scorer", routes=["/v1/rerank", "/v2/rerank"]) for n in service.scorers]
        gen_routes = ["/v1/completions", "/v1/chat/completions", "/v1/score"] + (
            ["/v1/guard"] if service.defense is not None else [])
        cards.append(O.ModelCard(id=service.model_name, kind="generator", routes=gen_routes))
        for n in service.cite_scorers:
            card = next((c for c in cards if c.id == n), None)
            if card is None:
                cards.append(O.ModelCard(id=n, kind="scorer", routes=["/v1/cite"]))
            else:
                card.routes.append("/v1/cite")
        cards += [O.ModelCard(id=n, kind="checker", routes=["/v1/factcheck"]) for n in service.checkers]
        return O.ModelList(data=cards)

    async def rerank(body: S.RerankRequest, request: Request, version: str) -> S.RerankResponse:
        texts = body.texts()
        too_many("documents", len(texts), config.max_documents, "documents")
        for i, t in enumerate(texts):
            if not t.strip():
                raise ClientError(422, f"field 'documents.{i}': the document is empty; there is nothing to score")
        name = body.model or config.scorers[0]
        if name not in service.scorers:
            raise ClientError(404, f"model {name!r} is not served here; served scorers: {', '.join(service.scorers)}")
        cap = config.max_tokens_per_doc
        m = min(body.max_tokens_per_doc or cap, cap)
        tokens = sum(min(m, _estimate_tokens(t)) + _estimate_tokens(body.query) for t in texts)
        ranking = await submit(request, service.batchers[f"rerank:{name}"], RerankJob(body.query, tuple(texts), m),
                               tokens)
        ranked = rank_by_score(ranking.raw)[: body.top_n or len(texts)]
        results = [S.RerankResult(index=r.index, relevance_score=ranking.relevance[r.index], raw_score=r.score,
                                  truncated=ranking.truncated[r.index],
                                  document=(S.RerankDocument(text=texts[r.index]) if isinstance(
                                      body.documents[r.index], str) else body.documents[r.index])
                                  if body.return_documents else None) for r in ranked]
        warnings = []
        cut = [i for i, t in enumerate(ranking.truncated) if t]
        if cut:
            warnings.append(f"{len(cut)} of {len(texts)} documents were cut to {m} tokens (max_tokens_per_doc) "
                            f"before scoring: indices {cut[:20]}{' ...' if len(cut) > 20 else ''}")
        if body.max_tokens_per_doc and body.max_tokens_per_doc > cap:
            warnings.append(f"max_tokens_per_doc {body.max_tokens_per_doc} is above this server's limit; used {cap}")
        meta = S.RerankMeta(api_version=S.ApiVersion(version=version),
                            billed_units=S.BilledUnits(search_units=1, input_tokens=ranking.tokens), warnings=warnings)
        return S.RerankResponse(id=rid(request), model=name, results=results, meta=meta)

    @app.post("/v1/rerank", response_model=S.RerankResponse, response_model_exclude_none=True)
    async def rerank_v1(body: S.RerankRequest, request: Request):
        return await rerank(body, request, "1")

    @app.post("/v2/rerank", response_model=S.RerankResponse, response_model_exclude_none=True)
    async def rerank_v2(body: S.RerankRequest, request: Request):
        return await rerank(body, request, "2")

    def check_model(name: str | None) -> str:
        if name not in (None, service.model_name):
            raise ClientError(404, f"model {name!r} is not served here; the served model is {service.model_name!r}")
        return service.model_name

    @app.post("/v1/score", response_model=S.ScoreResponse)
    async def score(body: S.ScoreRequest, request: Request):
        model = check_model(body.model)
        too_many("pairs", len(body.pairs), config.max_pairs, "pairs")
        try:
            service.engine.resolve_direction(body.direction)
        except (ValueError, ModelError) as e:
            raise ClientError(422, f"field 'direction': {e}") from None
        pairs = tuple(ScoreReq(p.context, p.continuation) for p in body.pairs)
        lls = await submit(request, service.batchers["score"], ScoreJob(pairs, body.direction, body.truncate),
                           sum(_estimate_tokens(p.context + p.continuation) for p in pairs))
        return S.ScoreResponse(id=rid(request), model=model, results=[
            S.ScoreResult(logprob=ll.logprob, num_tokens=ll.num_tokens, is_greedy=ll.is_greedy) for ll in lls])

    @app.post("/v1/guard", response_model=S.GuardResponse)
    async def guard(body: S.GuardRequest, request: Request):
        if service.defense is None:
            raise ClientError(404, "/v1/guard is not served: start trlm serve with --guard")
        tokens = _estimate_tokens(body.query + (body.response or "")) * (1 + config.guard_args.n)
        v = await submit(request, service.batchers["guard"], GuardJob(body.query, body.response), tokens)
        return S.GuardResponse(id=rid(request), rejected=v.rejected, stage=v.stage, flagged=v.n_flagged,
                               tau=config.guard_args.tau, queries=list(v.queries))

    from trlm.serve.spec import publish_limits

    add_routes(app, Api(service, submit, rid, too_many, check_model))
    publish_limits(app, service)
    app.add_middleware(_Gate, service=service)
    return app
