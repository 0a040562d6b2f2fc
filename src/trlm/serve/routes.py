"""Routes over :class:`~trlm.serve.app.Api`: OpenAI completions and chat (plain, streamed, steered), fact checking
and citation.

**Streaming** (``"stream": true``): OpenAI server-sent events — ``data: {chunk}`` lines, then ``data: [DONE]``.
Each choice's text arrives in pieces as it is decoded (:class:`~trlm.serve.generate.TextDelta` holds back what a
stop string or an incomplete character may still change), then a chunk with its ``finish_reason``; the pieces
concatenate to the text the same request gets without streaming. ``stream_options.include_usage`` adds a last
chunk with the usage. An error before the first piece is an ordinary JSON error; one after it is a
``data: {"error": {...}}`` event.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from trlm.core.checkpoint import ModelError
from trlm.core.llm import as_messages
from trlm.core.schema import GenArgs
from trlm.serve import openai_schemas as O
from trlm.serve import schemas as S
from trlm.serve.generate import GenJob, TextDelta, resolve_steer
from trlm.serve.systems import CiteJob, FactcheckJob

if TYPE_CHECKING:
    from trlm.serve.service import Service

# each server-sent event (stream=true): data is an OpenAI chunk as JSON, or [DONE] last
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {
    "data": {"type": "string", "description": "a chunk (JSON), an error ({\"error\": {...}}) or [DONE]"},
    "event": {"type": "string"}}}
SSE = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
             "description": "JSON, or server-sent events with stream=true"}}


@dataclass(frozen=True)
class Api:
    """What the route modules share with :func:`create_app`."""

    service: Service
    submit: Callable  # async (request, batcher, job, tokens, started=None) -> result (or the task, with started)
    rid: Callable[[Request], str]
    too_many: Callable[[str, int, int, str], None]
    check_model: Callable[[str | None], str]


class ClientError(Exception):
    """An error the client caused or must handle: answered with ``status`` and ``message``."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def add_routes(app, api: Api) -> None:
    service, config = api.service, api.service.config

    # ------------------------------------------------------------------------------------------ generation

    def job_for(body, prompts: list[str]) -> tuple[str, GenJob, int]:
        model = api.check_model(body.model)
        api.too_many("n", len(prompts) * body.n, config.max_prompts, "completions (prompts x n)")
        field = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
        max_tokens = min(O.DEFAULT_MAX_TOKENS, config.max_new_tokens) if body.max_tokens is None else body.max_tokens
        if max_tokens > config.max_new_tokens:
            raise ClientError(422, f"field '{field}': {max_tokens} is above this server's limit of "
                              f"{config.max_new_tokens}")
        steer = {}
        if body.steer:
            if not service.steerable:
                raise ClientError(422, "field 'steer': per-request steering needs the in-process model without "
                                  "--speculative")
            try:
                steer = resolve_steer(service.direction_sets, body.steer)
            except ValueError as e:
                raise ClientError(422, str(e)) from None
        args = GenArgs(max_new_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                       top_k=body.top_k, n=body.n, stop=body.stops())
        tokens = sum(_estimate_tokens(p) + max_tokens for p in prompts) * body.n
        return model, GenJob(tuple(prompts), args, tuple(body.seed for _ in prompts), steer), tokens

    def usage(out) -> O.Usage:
        done = sum(g.num_tokens for gs in out.generations for g in gs)
        return O.Usage(prompt_tokens=out.prompt_tokens, completion_tokens=done, total_tokens=out.prompt_tokens + done)

    async def stream(request: Request, body, prompts: list[str], chat: bool):
        """Submit a streamed job; once its first piece is decoded, answer with the event stream."""
        model, job, tokens = job_for(body, prompts)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_text(choice: int, text: str, reason):  # engine thread
            loop.call_soon_threadsafe(events.put_nowait, (choice, text, reason))

        job = GenJob(job.prompts, job.args, job.seeds, job.steer, on_text)
        first = asyncio.ensure_future(events.get())
        try:
            task = await api.submit(request, service.batchers["generate"], job, tokens, started=first)
        except BaseException:
            first.cancel()
            raise
        rid = api.rid(request)
        ident, created = (f"chatcmpl-{rid}" if chat else f"cmpl-{rid}"), int(time.time())
        n_choices = len(prompts) * body.n

        def chunk(choices: list, **extra) -> str:
            obj = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
                   "created": created, "model": model, "choices": choices, **extra}
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        def choice(i: int, piece: str | None, finish: str | None, role: bool = False) -> dict:
            if chat:
                delta = ({"role": "assistant", "content": ""} if role else
                         {} if piece is None else {"content": piece})
                return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": i, "text": piece or "", "logprobs": None, "finish_reason": finish}

        async def events_out():
            deltas = [TextDelta(job.args.stop, strip=chat) for _ in range(n_choices)]
            done: set[int] = set()
            pending = first
            try:
                if chat:
                    yield chunk([choice(i, None, None, role=True) for i in range(n_choices)])
                while len(done) < n_choices:
                    if pending is None:
                        pending = asyncio.ensure_future(events.get())
                    await asyncio.wait({pending, task}, return_when=asyncio.FIRST_COMPLETED)
                    if not pending.done():  # the job ended without (more) pieces: an error
                        task.result()
                        raise RuntimeError("the generation ended before every choice finished")
                    i, text, reason = pending.result()
                    pending = None
                    if i in done:
                        continue
                    piece = deltas[i].update(text, final=reason is not None)
                    if piece:
                        yield chunk([choice(i, piece, None)])
                    if reason is not None:
                        done.add(i)
                        yield chunk([choice(i, None, _finish(reason))])
                out = await task
                if body.include_usage():
                    yield chunk([], usage=usage(out).model_dump())
                yield "data: [DONE]\n\n"
            except Exception as e:  # after the first piece: report in the stream
                msg = str(e) if isinstance(e, (ValueError, ModelError)) else \
                    f"internal error; the server log has the details under request id {rid}"
                if not isinstance(e, (ValueError, ModelError)):
                    import logging

                    logging.getLogger("trlm.serve").exception("request %s: stream failed", rid)
                yield f"data: {json.dumps({'error': {'message': msg, 'type': 'error', 'request_id': rid}})}\n\n"
            finally:  # a client gone mid-stream closes this generator: stop its rows
                job.cancel.set()
                if pending is not None:
                    pending.cancel()

        return StreamingResponse(events_out(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions", response_model=O.CompletionResponse, responses=SSE)
    async def completions(body: O.CompletionRequest, request: Request):
        prompts = body.prompts()
        if not prompts:
            raise ClientError(422, "field 'prompt': at least one prompt is needed")
        if body.stream:
            return await stream(request, body, prompts, chat=False)
        model, job, tokens = job_for(body, prompts)
        out = await api.submit(request, service.batchers["generate"], job, tokens)
        choices = [O.CompletionChoice(index=i * body.n + j, text=g.text, finish_reason=_finish(g.finish_reason))
                   for i, gs in enumerate(out.generations) for j, g in enumerate(gs)]
        return O.CompletionResponse(id=f"cmpl-{api.rid(request)}", created=int(time.time()), model=model,
                                    choices=choices, usage=usage(out))

    @app.post("/v1/chat/completions", response_model=O.ChatResponse, responses=SSE)
    async def chat(body: O.ChatRequest, request: Request):
        try:
            prompt = service.engine.render_chat(as_messages([m.model_dump(include={"role", "content"})
                                                             for m in body.messages]))
        except (ValueError, ModelError) as e:
            raise ClientError(422, f"field 'messages': {e}") from None
        if body.stream:
            return await stream(request, body, [prompt], chat=True)
        model, job, tokens = job_for(body, [prompt])
        out = await api.submit(request, service.batchers["generate"], job, tokens)
        choices = [O.ChatChoice(index=j, message=O.ChatMessage(role="assistant", content=g.text.strip()),
                                finish_reason=_finish(g.finish_reason)) for j, g in enumerate(out.generations[0])]
        return O.ChatResponse(id=f"chatcmpl-{api.rid(request)}", created=int(time.time()), model=model,
                              choices=choices, usage=usage(out))

    # ------------------------------------------------------------------------------------------ factcheck, cite

    @app.post("/v1/factcheck", response_model=S.FactcheckResponse)
    async def factcheck(body: S.FactcheckRequest, request: Request):
        try:
            items = body.items()
        except ValueError as e:
            raise ClientError(422, str(e)) from None
        api.too_many("claims" if body.pairs is None else "pairs", len(items), config.max_claims, "claims")
        name = body.checker or config.checkers[0]
        if name not in service.checkers:
            raise ClientError(404, f"checker {name!r} is not served here; served checkers: "
                              f"{', '.join(service.checkers)}")
        job = FactcheckJob(tuple(d for d, _ in items), tuple(c for _, c in items), body.threshold)
        tokens = sum(_estimate_tokens(d + c) for d, c in items)
        v = await api.submit(request, service.batchers[f"factcheck:{name}"], job, tokens)
        return S.FactcheckResponse(id=api.rid(request), checker=name, results=[
            S.FactcheckResult(index=i, prob=k.prob, label=k.label, threshold=v.threshold,
                              chunk=S.FactcheckChunk(index=k.best_chunk, text=text), chunk_probs=list(k.chunk_probs))
            for i, (k, text) in enumerate(zip(v.checks, v.chunks))])

    @app.post("/v1/cite", response_model=S.CiteResponse)
    async def cite(body: S.CiteRequest, request: Request):
        api.too_many("claims", len(body.claims), config.max_claims, "claims")
        api.too_many("sentences", len(body.sentences), config.max_documents, "sentences")
        if body.search == "exclusion" and len(body.sentences) < 2:
            raise ClientError(422, "field 'sentences': exclusion search needs at least two source sentences")
        name = body.scorer or config.cite_scorers[0]
        if name not in service.cite_scorers:
            raise ClientError(404, f"scorer {name!r} is not served for /v1/cite; served: "
                              f"{', '.join(service.cite_scorers)}")
        job = CiteJob(tuple(body.claims), tuple(body.sentences), body.search, body.min_sentences, body.pick)
        src = sum(_estimate_tokens(t) for t in body.sentences)
        tokens = len(body.claims) * (src * (len(body.sentences) if body.search == "exclusion" else 1)
                                     + sum(_estimate_tokens(c) for c in body.claims))
        out = await api.submit(request, service.batchers[f"cite:{name}"], job, tokens)
        return S.CiteResponse(id=api.rid(request), scorer=name, search=body.search, results=[
            S.CiteResult(index=i, cited=c, scores=sc) for i, (c, sc) in enumerate(zip(out.cited, out.scores))])
