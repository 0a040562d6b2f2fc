"""The served engine: the :class:`~trlm.core.base.BaseEngine` contract over a vLLM server.

trlm keeps tokenising — the start token, the whitespace rule at the join and the reversal of TRLM-Ba / FoBa are
the contract's, exactly as in-process — and sends **token ids** to vLLM's OpenAI-compatible ``/v1/completions``:

* scoring   ``prompt = prefix + target`` ids, ``max_tokens: 1``, ``prompt_logprobs: 0``: the server returns the
  log-probability (and rank) of every prompt token; the target's are summed (greedy = every rank is 1);
* generation ``prompt = prefix`` ids, ``return_token_ids`` and ``logprobs: 0``; the returned ids go through the
  contract's commit rule (:class:`~trlm.core.base.GenRow`), so EOS, stop strings and the reverse models' flip
  back into reading order behave as in-process. Greedy output equals the in-process engine's (up to the
  server's precision); seeded sampling uses vLLM's sampler, so a seed reproduces on the same server only.

A served model is named by its base URL, ``http://host:port/v1`` (its one model) or ``http://host:port/v1#NAME``
(one of several). Its tokenizer, chat template and token order are read from the model trlm knows by the served
name (an embedded or shipped name, a directory, a hub id) or, failing that, from the directory the server
reports as the model's ``root`` — never guessed. Requests go ``concurrency`` at a time (the server batches them
continuously; ``TRLM_REMOTE_CONCURRENCY``, default 16), with a timeout, retries with back-off on connection
errors, 408 / 429 / 5xx (``TRLM_REMOTE_RETRIES``, default 3), and one-line errors that quote what the server
answered. ``TRLM_REMOTE_API_KEY`` is sent as a bearer token (vLLM's ``--api-key``).

    >>> eng = RemoteEngine.connect("http://127.0.0.1:8011/v1")
    >>> eng.loglikelihood([Request("The capital of France is", " Paris")])[0].logprob
    -1.9...
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Sequence

from trlm.core.base import BaseEngine, GenRow, _Item, progress_bar
from trlm.core.checkpoint import ModelError, read_meta
from trlm.core.schema import Direction, GenArgs, Generation, LogLik, Request

log = logging.getLogger(__name__)

RETRY_STATUS = (408, 429, 500, 502, 503, 504)


class ServerError(ModelError):
    """The server could not be reached, or answered something trlm cannot use; the message quotes it."""


class RemoteEngine(BaseEngine):
    """Scoring and plain generation on a model served by vLLM (see the module docstring)."""

    in_process = False

    def __init__(self, base_url: str, served: str, *, local: str | Path, max_model_len: int,
                 concurrency: int = 16, timeout: float = 600.0, retries: int = 3, backoff: float = 1.0,
                 api_key: str | None = None):
        from transformers import AutoTokenizer, GenerationConfig

        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url, self.served = base_url.rstrip("/"), served
        self.concurrency = concurrency
        self.name = f"{self.base_url}#{served}"
        self.local = local
        meta, tok_src = _local_meta(local)
        self.token_order = meta["token_order"]
        self.tokenizer = AutoTokenizer.from_pretrained(tok_src)
        try:
            gen_eos = GenerationConfig.from_pretrained(tok_src).eos_token_id
        except OSError:  # no generation_config.json: the tokenizer's EOS only
            gen_eos = None
        # vLLM refuses a prompt that leaves no room for one new token, so scoring gets max_model_len - 1
        self.max_length = max_model_len - 1
        # the server batches continuously: a "batch" here is only how many requests are in flight together
        self.max_batch_tokens = self.max_gen_batch_tokens = 1 << 62
        self.max_batch_size = 1 << 30
        self._init_special_tokens(gen_eos)
        self.http = _Http(self.base_url, timeout, retries, backoff, api_key, connections=concurrency + 4)

    @classmethod
    def connect(cls, spec: str, *, local: str | Path | None = None, concurrency: int | None = None,
                **kwargs) -> "RemoteEngine":
        """Connect to ``http://host:port/v1[#NAME]``: list the server's models, pick the one named (or its only
        one), and find its tokenizer and ``trlm.json`` (``local`` overrides where they are read from)."""
        base, _, want = spec.partition("#")
        base = base.rstrip("/")
        kwargs.setdefault("api_key", os.environ.get("TRLM_REMOTE_API_KEY"))
        kwargs.setdefault("retries", int(os.environ.get("TRLM_REMOTE_RETRIES", "3")))
        concurrency = concurrency or int(os.environ.get("TRLM_REMOTE_CONCURRENCY", "16"))
        with _Http(base, min(30.0, kwargs.get("timeout", 600.0)), kwargs["retries"], kwargs.get("backoff", 1.0),
                   kwargs["api_key"]) as http:
            cards = http.request("GET", "/models").get("data") or []
        names = [c.get("id") for c in cards]
        if want:
            card = next((c for c in cards if c.get("id") == want), None)
            if card is None:
                raise ServerError(f"{base} serves {', '.join(map(str, names)) or 'no model'}, not {want!r}; "
                                  f"name one of them after '#'")
        elif len(cards) == 1:
            card = cards[0]
        else:
            raise ServerError(f"{base} serves {len(cards)} models ({', '.join(map(str, names))}); name one: "
                              f"{base}#NAME")
        served = card["id"]
        max_len = card.get("max_model_len")
        if not isinstance(max_len, int):
            raise ServerError(f"{base}/models gave no max_model_len for {served!r}: trlm needs a vLLM server "
                              "(python -m vllm.entrypoints.openai.api_server)")
        return cls(base, served, local=local or _find_local(served, card.get("root")), max_model_len=max_len,
                   concurrency=concurrency, **kwargs)

    def _completions(self, bodies: list[dict], desc: str, progress: bool) -> list[dict]:
        """POST every body to /completions, ``concurrency`` in flight, answers in input order."""
        bar = progress_bar(len(bodies), desc, progress)

        def one(body):
            out = self.http.request("POST", "/completions", {"model": self.served, **body})
            bar.update(1)
            return out

        try:
            if len(bodies) == 1 or self.concurrency == 1:
                return [one(b) for b in bodies]
            with ThreadPoolExecutor(self.concurrency) as pool:
                return list(pool.map(one, bodies))
        finally:
            bar.close()

    # ------------------------------------------------------------------ scoring

    def loglikelihood(self, requests: Sequence[Request], *, direction: str | None = None,
                      return_tokens: bool = False, truncate: Literal["error", "context"] = "error",
                      progress: bool = False) -> list[LogLik]:
        d = self.resolve_direction(direction)
        items = [self._encode_request(r, d, truncate, i) for i, r in enumerate(requests)]
        bodies = [{"prompt": it.prefix + it.target, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
                  for it in items]
        out = []
        for it, resp in zip(items, self._completions(bodies, "scoring", progress)):
            lps, ranks = self._prompt_logprobs(resp, it.prefix + it.target, len(it.target))
            if d == "reverse":
                lps = lps[::-1]
            out.append(LogLik(float(sum(lps)), len(lps), all(r == 1 for r in ranks),
                              tuple(lps) if return_tokens else None))
        return out

    def _prompt_logprobs(self, resp: dict, ids: list[int], n: int) -> tuple[list[float], list[int]]:
        """The log-prob and rank of the last ``n`` prompt tokens from a /completions answer."""
        try:
            plp = resp["choices"][0]["prompt_logprobs"]
        except (KeyError, IndexError, TypeError):
            plp = None
        if not isinstance(plp, list) or len(plp) != len(ids):
            raise ServerError(f"{self.base_url}/completions answered without prompt_logprobs for every prompt "
                              f"token (got {json.dumps(resp)[:200]}): trlm scores through vLLM's prompt_logprobs; "
                              "serve the model with vLLM's OpenAI-compatible server")
        lps, ranks = [], []
        for pos in range(len(ids) - n, len(ids)):
            entry = (plp[pos] or {}).get(str(ids[pos]))
            if entry is None:
                raise ServerError(f"{self.base_url}: prompt_logprobs at position {pos} lack token {ids[pos]}")
            lps.append(float(entry["logprob"]))
            ranks.append(int(entry.get("rank") or 0))
        return lps, ranks

    # ------------------------------------------------------------------ generation

    def _generate_batch(self, batch: list[_Item], args: GenArgs, d: Direction) -> list[Generation]:
        bodies = []
        for it in batch:
            body = {"prompt": it.prefix, "max_tokens": args.max_new_tokens, "temperature": args.temperature,
                    "top_p": args.top_p, "top_k": args.top_k, "min_p": 0.0, "repetition_penalty": 1.0,
                    "presence_penalty": 0.0, "frequency_penalty": 0.0, "n": 1, "logprobs": 0,
                    "return_token_ids": True, "stop_token_ids": self.eos_ids,
                    "seed": (it.seed * 1_000_003 + it.sample) % (1 << 62)}
            if args.stop and d == "forward":  # the server stops early; the commit rule below decides the cut
                body["stop"] = list(args.stop)
            bodies.append(body)
        gens = []
        for resp in self._completions(bodies, "generating", False):
            choice = (resp.get("choices") or [{}])[0]
            ids = choice.get("token_ids")
            lps = (choice.get("logprobs") or {}).get("token_logprobs")
            if not isinstance(ids, list) or not isinstance(lps, list) or len(lps) != len(ids):
                raise ServerError(f"{self.base_url}/completions answered without token_ids and their logprobs "
                                  f"({json.dumps(resp)[:200]}): trlm needs a vLLM server that knows return_token_ids")
            row = GenRow(self, args, d)
            for tok, lp in zip(ids, lps):
                row.commit(int(tok), float(lp) if lp is not None else float("-inf"))
            if row.reason is None and choice.get("finish_reason") == "stop":
                row.reason = "stop" if isinstance(choice.get("stop_reason"), str) else "eos"
            gens.append(row.result())
        return gens

    def close(self) -> None:
        self.http.close()


class _Http:
    """One HTTP client to a server's base URL: calls with retries and back-off on connection errors, timeouts,
    408 / 429 / 5xx; anything else is a one-line :class:`ServerError` quoting the server."""

    def __init__(self, base_url: str, timeout: float, retries: int, backoff: float, api_key: str | None,
                 connections: int = 4):
        import httpx

        self.base_url, self.timeout, self.retries, self.backoff = base_url, timeout, retries, backoff
        self.client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=connections),
                                   headers={"Authorization": f"Bearer {api_key}"} if api_key else {})

    def __enter__(self) -> "_Http":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, route: str, body: dict | None = None) -> dict:
        import httpx

        url = self.base_url + route
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                r = self.client.request(method, url, json=body)
            except httpx.TimeoutException:
                if last:
                    raise ServerError(f"{url} did not answer within {self.timeout:.0f} s "
                                      f"({self.retries + 1} attempts)") from None
            except httpx.TransportError as e:
                if last:
                    raise ServerError(f"cannot reach {url} ({e}); is the vLLM server running? Start one with "
                                      "`make vllm-serve MODEL=<name> PORT=<port>`") from None
            else:
                if r.status_code < 400:
                    try:
                        return r.json()
                    except json.JSONDecodeError:
                        raise ServerError(f"{url} did not answer JSON: {r.text[:200]!r}") from None
                if r.status_code not in RETRY_STATUS or last:
                    raise ServerError(f"{url} answered HTTP {r.status_code}: {_server_message(r)}")
            wait = self.backoff * 2 ** attempt
            log.warning("%s: attempt %d failed; retrying in %.1f s", url, attempt + 1, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")


def _server_message(r) -> str:
    """The error text of a vLLM / OpenAI-style error body, on one line."""
    try:
        body = r.json()
        msg = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("message")
        msg = msg or body.get("detail") or json.dumps(body)
    except (json.JSONDecodeError, AttributeError):
        msg = r.text
    return " ".join(str(msg).split())[:400]


def _find_local(served: str, root: str | None) -> str:
    """What trlm loads the served model's tokenizer and token order from: the served name if trlm knows it (an
    embedded or shipped name, a directory, a hub id), else the server's ``root`` if it is a directory here."""
    from trlm.core.models import resolve_path

    for ref in (served, root):
        if not ref:
            continue
        try:
            path, kind = resolve_path(ref)
        except ModelError:
            continue
        return ref if path is None else str(path)
    raise ModelError(f"the served model {served!r} (root {root!r}) is not a model trlm can find here, and its "
                     "tokenizer and token order must come from its own files: serve it with --served-model-name "
                     "set to a trlm model name, a directory or a hub id, or pass local=DIR")


def _local_meta(local: str | Path) -> tuple[dict, str]:
    """(trlm metadata, where the tokenizer is) for a served model's local reference."""
    from trlm.core.models import resolve_path

    path, _ = resolve_path(str(local))
    if path is None:  # a hub id: a plain HF model, so forward
        return {"token_order": "forward"}, str(local)
    meta = (read_meta(path) if path.is_dir() else None) or {"token_order": "forward"}
    if meta.get("kind") == "factcheck":
        raise ModelError(f"{local} is a fact checker, not a language model")
    if path.is_dir() and not (path / "tokenizer_config.json").exists():
        # a LoRA adapter (the shipped reverse models) or a student saved without its tokenizer: its tokenizer is
        # the model it was built from
        donor = meta.get("base_model") if meta.get("adapter") else meta.get("shared_from")
        if not donor:
            raise ModelError(f"{path} has no tokenizer files (tokenizer_config.json); trlm reads the served "
                             f"model's tokenizer from there")
        return meta, _local_meta(donor)[1]
    return meta, str(path)
