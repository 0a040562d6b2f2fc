"""``trlm serve``: TRLM re-ranking (Cohere shape), scoring, guarding and generation (OpenAI subset) over HTTP,
on the same engine and scorers as the CLI, with dynamic batching, a score cache, limits and auth.

    trlm serve --scorer trlm-fo,forward-mean --port 8000
    curl -s localhost:8000/v1/rerank -d '{"query": "why is the sky blue", "documents": ["Rayleigh ...", "Paris ..."]}'

Modules: ``schemas`` (pydantic bodies), ``service`` (config, models, what each route computes), ``batching``
(dynamic batching, LRU score cache), ``metrics`` (Prometheus text), ``app`` (FastAPI routes, auth, errors),
``cli`` (the commands), ``bench`` (``trlm bench serve``).
"""

from trlm.serve.service import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(*args, **kwargs):
    """:func:`trlm.serve.app.create_app` (imported on use: FastAPI is loaded only by the server)."""
    from trlm.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
