"""`trlm serve` computes what the CLI computes (fp32, in-process): /v1/rerank and /v2/rerank give the scores of
`trlm rerank --task retrieval`, /v1/score those of `trlm score`, and ``max_tokens_per_doc`` cuts a document where
`--max-response-tokens` and a hand cut of its tokens do. The CLI's default prompt set (``--task rerank``) is not the
service's (retrieval): the difference is pinned, and `trlm rerank --help` says so."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest
import torch
from typer.testing import CliRunner

from trlm.cli import app
from trlm.serve.app import create_app
from trlm.serve.service import ServeConfig, Service

QUERY = "why is the sky blue"
DOCS = ["The sky is blue because air molecules scatter short blue wavelengths of sunlight more than red ones "
        "(Rayleigh scattering).",
        "Paris is the capital and largest city of France.",
        "Blue light is scattered in all directions by the gases of the atmosphere."]
ROWS = [{"query": QUERY, "candidates": DOCS},
        {"query": "what is the capital of France", "candidates": [DOCS[1], "Lyon is a city in France."]}]
LONG = " ".join(["Sunlight reaches the atmosphere and is scattered by nitrogen and oxygen molecules."] * 8)
PAIRS = [{"context": "The capital of France is", "continuation": " Paris"},
         {"context": "The capital of France is", "continuation": " London"},
         {"context": "", "continuation": "Hello world"},
         {"context": "Water boils at 100 degrees", "continuation": " Celsius at sea level."}]
runner = CliRunner()


@pytest.fixture(scope="module")
def cli_engine():
    """The engine `trlm rerank` scores with (``get_engine`` of the default model, dtype auto), on a host where
    auto means float32 (a CPU without native bf16, stubbed), so that CLI and service both run in float32."""
    from trlm.core import device
    from trlm.core.engine import get_engine
    from trlm.core.models import DEFAULT_MODEL

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "cpu_has_bf16", lambda: False)
        get_engine.cache_clear()
        eng = get_engine(DEFAULT_MODEL)
        assert eng.lm.dtype == torch.float32
        yield eng
    get_engine.cache_clear()  # later tests load the default engine with their own host's dtype


def _app(engine, **kw):
    cfg = ServeConfig(scorers=("trlm-fo", "forward-mean"), guard=False, **kw)
    return create_app(service=Service(cfg, engine=engine))


@pytest.fixture(scope="module")
def served(cli_engine):
    return _app(cli_engine)


def call(app, path: str, body: dict) -> dict:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                     timeout=120) as c:
            return await c.post(path, json=body)

    r = asyncio.run(go())
    assert r.status_code == 200, r.text
    return r.json()


def cli_rerank(tmp_path, rows, *flags) -> list[dict]:
    src, out = tmp_path / "rows.jsonl", tmp_path / "ranked.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["rerank", str(src), "--out", str(out), *flags])
    assert res.exit_code == 0, res.output
    return [json.loads(x) for x in out.read_text().splitlines()]


@pytest.mark.parametrize("scorer", ["trlm-fo", "forward-mean"])
@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_rerank_routes_equal_trlm_rerank_task_retrieval(served, tmp_path, scorer, path):
    cli = cli_rerank(tmp_path, ROWS, "--scorer", scorer, "--task", "retrieval")
    for row, want in zip(ROWS, cli):
        body = call(served, path, {"model": scorer, "query": row["query"], "documents": row["candidates"]})
        assert [x["index"] for x in body["results"]] == want["ranking"]  # best first, as the CLI ranks
        for x in body["results"]:
            assert x["raw_score"] == pytest.approx(want["scores"][x["index"]], abs=1e-4)
            assert x["truncated"] is False


def test_the_clis_default_task_is_rerank_and_not_the_services_retrieval(served, tmp_path):
    default = cli_rerank(tmp_path, ROWS[:1], "--scorer", "trlm-fo")[0]["scores"]
    explicit = cli_rerank(tmp_path, ROWS[:1], "--scorer", "trlm-fo", "--task", "rerank")[0]["scores"]
    body = call(served, "/v1/rerank", {"model": "trlm-fo", "query": QUERY, "documents": DOCS})
    served_scores = [x["raw_score"] for x in sorted(body["results"], key=lambda x: x["index"])]
    assert default == explicit  # --task rerank is the default
    assert all(abs(a - b) > 1e-2 for a, b in zip(default, served_scores))  # other prompts, other scores
    help_text = " ".join(runner.invoke(app, ["rerank", "--help"], terminal_width=200).output.split())
    assert "trlm serve" in help_text and "retrieval" in help_text


def test_score_route_equals_trlm_score(served, tmp_path):
    src, out = tmp_path / "pairs.jsonl", tmp_path / "scored.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    res = runner.invoke(app, ["score", str(src), "--out", str(out), "--dtype", "float32", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    cli = [json.loads(x) for x in out.read_text().splitlines()]
    body = call(served, "/v1/score", {"pairs": PAIRS})
    assert len(body["results"]) == len(cli) == len(PAIRS)
    for got, want in zip(body["results"], cli):
        assert got["logprob"] == pytest.approx(want["logprob"], abs=1e-4)
        assert got["num_tokens"] == want["num_tokens"]


def test_max_tokens_per_doc_cuts_like_the_cli_and_a_hand_cut(served, cli_engine, tmp_path):
    """A request's max_tokens_per_doc (16), and the server's limit when a request asks for more (12 < 40): the
    long document is scored as its first 16 (12) tokens, exactly as `--max-response-tokens 16` (12) and as the CLI
    scoring the decoded first 16 (12) tokens uncut."""
    tok = cli_engine.tokenizer
    ids = tok(LONG, add_special_tokens=False)["input_ids"]
    capped = _app(cli_engine, max_tokens_per_doc=12)
    for app_, asked, cut in ((served, 16, 16), (capped, 40, 12)):
        hand = tok.decode(ids[:cut], skip_special_tokens=True)
        assert len(ids) > 4 * cut and hand != LONG
        body = call(app_, "/v1/rerank", {"model": "forward-mean", "query": QUERY, "documents": [DOCS[1], LONG],
                                         "max_tokens_per_doc": asked})
        res = {x["index"]: x for x in body["results"]}
        assert (res[0]["truncated"], res[1]["truncated"]) == (False, True)
        assert any(f"cut to {cut} tokens" in w for w in body["meta"]["warnings"])
        if asked > cut:
            assert any("above this server's limit" in w for w in body["meta"]["warnings"])
        flag = cli_rerank(tmp_path, [{"query": QUERY, "candidates": [DOCS[1], LONG]}], "--scorer", "forward-mean",
                          "--task", "retrieval", "--max-response-tokens", str(cut))[0]["scores"]
        by_hand = cli_rerank(tmp_path, [{"query": QUERY, "candidates": [DOCS[1], hand]}], "--scorer",
                             "forward-mean", "--task", "retrieval")[0]["scores"]
        assert [res[0]["raw_score"], res[1]["raw_score"]] == pytest.approx(flag, abs=1e-4)
        assert flag == pytest.approx(by_hand, abs=1e-4)
        uncut = cli_rerank(tmp_path, [{"query": QUERY, "candidates": [LONG]}], "--scorer", "forward-mean",
                           "--task", "retrieval")[0]["scores"][0]
        assert not math.isclose(res[1]["raw_score"], uncut, abs_tol=1e-3)  # the cut changed the score
