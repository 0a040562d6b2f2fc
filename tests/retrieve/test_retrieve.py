"""Retrieval: BEIR loading, first stages, re-ranking, IR metrics against hand-computed values, the CLI."""

from __future__ import annotations

import json
import math

import pytest

from trlm.core.io import InputError
from trlm.retrieve.metrics import evaluate, per_query_metrics
from trlm.core.ranking import Ranked
from trlm.retrieve import BM25Index, DenseIndex, load_beir, read_qrels, rerank_hits, retrieve
from trlm.scoring import Scorer

CORPUS = {
    "d1": "Paris is the capital and largest city of France.",
    "d2": "Bananas are yellow fruits that are rich in potassium.",
    "d3": "The python is a large snake that kills its prey by constriction.",
    "d4": "The stock market fell sharply on Monday after the report.",
    "d5": "Berlin is the capital of Germany.",
}


def write_beir(root, header: bool = False):
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                               for k, v in CORPUS.items()))
    queries = {"q1": "What is the capital of France?", "q2": "snake that squeezes prey", "q3": "unjudged"}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (root / "qrels").mkdir(exist_ok=True)
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + ["q1\td1\t2", "q1\td5\t0", "q2\td3\t1"]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------------------------------ metrics

def test_metrics_hand_computed():
    qrels = {"q": {"d1": 3, "d2": 1}}
    r = evaluate({"q": ["d2", "x", "d1"]}, qrels)
    # DCG = 1/log2(2) + 3/log2(4) = 2.5; IDCG = 3 + 1/log2(3)
    assert r["ndcg@10"] == pytest.approx(2.5 / (3 + 1 / math.log2(3)))
    # exponential gains 2^g - 1: DCG = 1 + 7/2; IDCG = 7 + 1/log2(3)
    assert r["ndcg@10_exp"] == pytest.approx(4.5 / (7 + 1 / math.log2(3)))
    assert (r["p@1"], r["r@10"], r["mrr@10"], r["n_queries"]) == (1.0, 1.0, 1.0, 1)
    r2 = evaluate({"q": ["d2", "x", "d1"]}, qrels, min_rel=2)  # grade 1 no longer relevant
    assert (r2["p@1"], r2["r@10"], r2["mrr@10"]) == (0.0, 1.0, pytest.approx(1 / 3))


def test_per_query_metrics_are_the_values_evaluate_averages():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}}
    per = per_query_metrics({"a": ["d1"], "b": ["x", "d2"]}, qrels)
    assert per["a"]["mrr@10"] == 1.0 and per["b"]["mrr@10"] == 0.5
    assert evaluate({"a": ["d1"], "b": ["x", "d2"]}, qrels)["mrr@10"] == pytest.approx(0.75)


def test_metrics_average_over_queries_and_empty_ranking_counts_zero():
    qrels = {"a": {"d1": 1, "d2": 1}, "b": {"z": 1}}
    r = evaluate({"a": ["x", "d1"], "b": []}, qrels)
    assert r["r@10"] == pytest.approx((0.5 + 0.0) / 2)
    assert r["mrr@10"] == pytest.approx((0.5 + 0.0) / 2)
    assert r["p@1"] == 0.0 and r["n_queries"] == 2


def test_metrics_cutoff_and_rank_order_not_scores():
    qrels = {"q": {"rel": 1}}
    assert evaluate({"q": [f"x{i}" for i in range(10)] + ["rel"]}, qrels)["mrr@10"] == 0.0
    # doc ids sort differently from ranks: the rank order given is what counts
    assert evaluate({"q": ["zzz", "rel"]}, qrels)["mrr@10"] == 0.5


def test_metrics_errors():
    with pytest.raises(ValueError, match="without relevant judgments"):
        evaluate({"q": ["d"]}, {"other": {"d": 1}})
    with pytest.raises(ValueError, match="twice"):
        evaluate({"q": ["d", "d"]}, {"q": {"d": 1}})


# ------------------------------------------------------------------------------------------ loading

@pytest.mark.parametrize("header", [False, True])
def test_load_beir_with_and_without_qrels_header(tmp_path, header):
    ds = load_beir(write_beir(tmp_path / "beir", header=header))
    assert ds.corpus["d3"].startswith("The python")
    assert ds.qrels == {"q1": {"d1": 2, "d5": 0}, "q2": {"d3": 1}}
    assert ds.judged_queries == ["q1", "q2"]


def test_load_beir_dbpedia_shaped_rows_put_the_title_first_and_bm25_matches_it(tmp_path):
    # DBpedia-Entity (held out of ../shared/data) has ids like "<dbpedia:X>", the entity name only in "title",
    # a "metadata" field and header + grade-0 rows in its qrels: the name must reach the ranker.
    root = tmp_path / "dbpedia"
    (root / "qrels").mkdir(parents=True)
    rows = [{"_id": "<dbpedia:Oceanic_Airlines>", "title": "Oceanic Airlines",
             "text": "A fictional carrier that appears in several films.", "metadata": {"url": "u1"}},
            {"_id": "<dbpedia:Berlin>", "title": "Berlin", "text": "The capital of Germany.", "metadata": {}}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "INEX_LD-1", "text": "oceanic airlines"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                             "INEX_LD-1\t<dbpedia:Oceanic_Airlines>\t2\nINEX_LD-1\t<dbpedia:Berlin>\t0\n")
    ds = load_beir(root)
    assert ds.corpus["<dbpedia:Oceanic_Airlines>"] == ("Oceanic Airlines A fictional carrier that appears in "
                                                       "several films.")
    assert ds.qrels == {"INEX_LD-1": {"<dbpedia:Oceanic_Airlines>": 2, "<dbpedia:Berlin>": 0}}
    hits = BM25Index(ds.corpus).search(["oceanic airlines"], k=2)[0]
    assert hits[0].id == "<dbpedia:Oceanic_Airlines>"  # the words occur only in the title


def test_qrels_trec_format_and_errors(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text("q1 0 d1 2\nq1 0 d2 0\n")
    assert read_qrels(p) == {"q1": {"d1": 2, "d2": 0}}
    p.write_text("q1\td1\t1\nq1\td2\tvery\n")
    with pytest.raises(InputError, match=r"q.tsv:2: score 'very'"):
        read_qrels(p)
    p.write_text("q1\td1\n")
    with pytest.raises(InputError, match=":1: expected 3"):
        read_qrels(p)


def test_load_beir_bad_inputs(tmp_path):
    root = write_beir(tmp_path / "beir")
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2"}\n')
    with pytest.raises(InputError, match=r"corpus.jsonl:2: missing field 'text'"):
        load_beir(root)
    with pytest.raises(InputError, match="BEIR data folder not found"):
        load_beir(tmp_path / "nowhere")
    root = write_beir(tmp_path / "beir2")
    (root / "qrels" / "test.tsv").write_text("qX\td1\t1\n")
    with pytest.raises(InputError, match="not in queries.jsonl"):
        load_beir(root)


# ------------------------------------------------------------------------------------------ first stage, rerank

def test_bm25_finds_the_lexical_match():
    hits = BM25Index(CORPUS).search(["python snake constriction", "capital of France"], k=3)
    assert hits[0][0].id == "d3" and hits[1][0].id == "d1"
    assert len(hits[0]) == 3 and hits[0][0].score >= hits[0][1].score


def test_bm25_ties_keep_corpus_order_and_a_smaller_k_is_a_prefix_of_a_larger_one():
    # five identical passages tie exactly; bm25s's own retrieve orders such ties by numpy's partition and sort
    # (it changed the top 10 with k on TREC-DL19). Ours: corpus order, and the top 2 of k=5 are the k=2 result.
    corpus = {f"t{i}": "the potassium content of bananas" for i in (4, 0, 3, 1, 2)} | {"x": "a different text"}
    idx = BM25Index(corpus)
    k5, k2 = idx.search(["potassium bananas"], 5)[0], idx.search(["potassium bananas"], 2)[0]
    assert [h.id for h in k5] == ["t4", "t0", "t3", "t1", "t2"]
    assert [h.id for h in k2] == ["t4", "t0"] and len({h.score for h in k5}) == 1 and k5[0].score > 0


def test_bm25_scores_equal_bm25s_retrieve_scores():
    # our search takes bm25s's per-document scores itself; they must be the scores bm25s's retrieve reports
    import bm25s

    idx = BM25Index(CORPUS)
    q = "capital of France python"
    ours = {h.id: h.score for h in idx.search([q], len(CORPUS))[0]}
    docs, scores = idx.retriever.retrieve(bm25s.tokenize([q], stopwords="en", show_progress=False), k=len(CORPUS),
                                          show_progress=False)
    theirs = {idx.ids[int(d)]: float(s) for d, s in zip(docs[0], scores[0])}
    assert ours == pytest.approx(theirs) and max(ours.values()) > 0


def test_bm25_query_of_only_stop_words_scores_every_passage_zero_in_corpus_order():
    hits = BM25Index(CORPUS).search(["of the"], 3)[0]
    assert [h.id for h in hits] == list(CORPUS)[:3] and all(h.score == 0.0 for h in hits)


def test_bm25_index_does_not_emit_bm25s_debug_records(caplog):
    # bm25s sets its logger to DEBUG, so its records reach any root handler (the CLI's prints them) whatever
    # the root level; caplog's root handler sees exactly what such a handler would print.
    BM25Index(CORPUS).search(["capital of France"], k=1)
    assert not [r for r in caplog.records if r.name.startswith("bm25s") and r.levelno < 30]


def test_dense_minilm_finds_the_semantic_match():
    hits = DenseIndex(CORPUS).search(["Which fruit contains a lot of potassium?"], k=2)[0]
    assert hits[0].id == "d2"
    assert -1.0 <= hits[1].score <= hits[0].score <= 1.0


class TableScorer(Scorer):
    name = "table-stub"

    def __init__(self, table):
        self.table = table

    def score_many(self, items, progress=False):
        return [[self.table[d] for d in docs] for _, docs in items]


def test_rerank_hits_orders_by_score_and_keeps_first_stage_order_on_ties():
    hits = [[Ranked(k, 9.0 - k, id=f"d{k + 1}") for k in range(4)]]
    table = {CORPUS["d1"]: -5.0, CORPUS["d2"]: -1.0, CORPUS["d3"]: -5.0, CORPUS["d4"]: -2.0}
    out = rerank_hits(["q"], hits, CORPUS, TableScorer(table))[0]
    assert [r.id for r in out] == ["d2", "d4", "d1", "d3"]
    assert out[0] == Ranked(1, -1.0, id="d2")  # index: its place in the first-stage list
    with pytest.raises(ValueError, match="1 queries but 2"):
        rerank_hits(["q"], hits * 2, CORPUS, TableScorer(table))


def test_rrf_fuse_sums_reciprocal_ranks_and_breaks_ties_by_first_stage_order():
    from trlm.retrieve.first_stage import rrf_fuse

    first = [Ranked(i, 0.0, id=d) for i, d in enumerate(["a", "b", "c", "d"])]
    reranked = [Ranked(i, 0.0, id=d) for i, d in enumerate(["d", "c", "a", "b"])]
    out = rrf_fuse(first, reranked, k=1)
    # a: 1/2 + 1/4 = .75, d: 1/5 + 1/2 = .70, b: 1/3 + 1/5 = .533, c: 1/4 + 1/3 = .583
    assert [r.id for r in out] == ["a", "d", "c", "b"]
    assert out[0].score == pytest.approx(0.75)
    swapped = rrf_fuse(first[:2], [first[1], first[0]], k=60)  # equal sums: the first stage's order stands
    assert [r.id for r in swapped] == ["a", "b"]
    with pytest.raises(ValueError, match="same ids"):
        rrf_fuse(first, reranked[:3])


def test_retrieve_errors():
    idx = BM25Index(CORPUS)
    with pytest.raises(ValueError, match="query is empty"):
        retrieve("  ", idx, CORPUS)
    with pytest.raises(ValueError, match="k must be"):
        retrieve("paris", idx, CORPUS, k=0)
    with pytest.raises(ValueError, match="fuse must be one of none, rrf"):
        retrieve("paris", idx, CORPUS, scorer=TableScorer({}), fuse="linear")
    with pytest.raises(ValueError, match="needs a scorer"):
        retrieve("paris", idx, CORPUS, fuse="rrf")


def test_retrieve_fuse_rrf_returns_the_first_stage_and_re_ranking_fused_by_reciprocal_rank():
    from trlm.retrieve.first_stage import rrf_fuse

    idx = BM25Index(CORPUS)
    table = {CORPUS["d1"]: -9.0, CORPUS["d2"]: -1.0, CORPUS["d3"]: -2.0, CORPUS["d4"]: -3.0, CORPUS["d5"]: -4.0}
    first = retrieve("capital of France", idx, CORPUS, k=5)
    reranked = retrieve("capital of France", idx, CORPUS, k=5, scorer=TableScorer(table))
    fused = retrieve("capital of France", idx, CORPUS, k=5, scorer=TableScorer(table), fuse="rrf")
    assert first[0].id == "d1" and reranked[0].id == "d2"  # the stub ranks BM25's best passage last
    assert [r.id for r in fused] == [r.id for r in rrf_fuse(first, reranked)]
    assert [r.id for r in fused] != [r.id for r in reranked]


def test_trlm_fo_reranks_the_answer_first(smol):
    from trlm.scoring import make_scorer

    sc = make_scorer("trlm-fo", smol, task="retrieval")
    out = retrieve("What is the capital of France?", BM25Index(CORPUS), CORPUS, k=5, scorer=sc)
    assert out[0].id == "d1"
    assert sorted(r.id for r in out) == sorted(CORPUS)


# ------------------------------------------------------------------------------------------ benchmark and CLI

def test_bench_retrieve_shape(tmp_path):
    from trlm.retrieve.bench import run_bench_retrieve

    res = run_bench_retrieve(write_beir(tmp_path / "beir"), tmp_path / "out", k=3, scorers=["length"], chunk=1,
                             progress=False)
    assert set(res) == {"bm25", "minilm", "bm25+length", "bm25+length (rrf)"}
    for r in res.values():
        assert set(r) >= {"ndcg@10", "p@1", "r@10", "mrr@10", "n_queries"} and r["n_queries"] == 2
    assert res["bm25"]["p@1"] == 1.0  # both judged queries have their relevant passage lexically matched
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == res
    assert (tmp_path / "out" / "runs" / "bm25+length.jsonl").exists()
    assert "| bm25+length |" in (tmp_path / "out" / "report.md").read_text()
    # paired.json: each re-ranked method against bm25 on the same 2 queries; its mean is the nDCG@10 gap
    paired = {r["method"]: r for r in json.loads((tmp_path / "out" / "paired.json").read_text())}
    assert set(paired) == {"bm25+length", "bm25+length (rrf)"}
    for m, r in paired.items():
        assert r["vs"] == "bm25" and r["n_queries"] == 2
        assert r["ndcg@10_diff"] == pytest.approx(res[m]["ndcg@10"] - res["bm25"]["ndcg@10"])
        assert r["ci95"][0] <= r["ndcg@10_diff"] <= r["ci95"][1]


def test_paired_ndcg_compares_a_short_run_on_the_first_stage_prefix():
    from trlm.retrieve.bench import paired_ndcg

    per = {"bm25": [0.2, 0.4, 0.6], "bm25+x": [0.5, 0.4], "minilm": [1.0, 1.0, 1.0]}
    rows = paired_ndcg(per, "bm25")
    # only "bm25+..." methods; the 2-query run is paired with bm25's first 2 queries: mean of (+0.3, 0.0)
    assert [r["method"] for r in rows] == ["bm25+x"]
    assert rows[0]["ndcg@10_diff"] == pytest.approx(0.15) and rows[0]["n_queries"] == 2
    assert paired_ndcg({"bm25+x": [0.5]}, "bm25") == []  # first stage not recorded yet


def test_bench_retrieve_dense_first_stage_reranks_minilm_top_k(tmp_path):
    from trlm.retrieve.bench import run_bench_retrieve

    res = run_bench_retrieve(write_beir(tmp_path / "beir"), tmp_path / "out", first_stage="dense", k=3,
                             scorers=["length"], chunk=1, progress=False)
    # the dense first stage is the minilm row (no duplicate); "(rrf)" fuses the re-ranking with it
    assert set(res) == {"minilm", "minilm+length", "minilm+length (rrf)"}
    ranked = [json.loads(x) for x in (tmp_path / "out" / "runs" / "minilm+length.jsonl").read_text().splitlines()]
    first = [json.loads(x) for x in (tmp_path / "out" / "runs" / "minilm.jsonl").read_text().splitlines()]
    assert len(ranked) == len(first) == 2
    for r, f in zip(ranked, first):  # re-ranking permutes MiniLM's top 3, nothing else
        assert r["qid"] == f["qid"] and len(r["ranking"]) == 3
        assert sorted(d for d, _ in r["ranking"]) == sorted(d for d, _ in f["ranking"])


def test_cli_help_lists_flags_and_an_unknown_scorer_is_a_one_line_error(one_line_error):
    from typer.testing import CliRunner

    from trlm.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["bench", "retrieve", "--help"]).output
    for flag in ("--data", "--first-stage", "--k", "--scorers", "--limit-queries", "--out"):
        assert flag in out
    out = runner.invoke(app, ["bench", "cite", "--help"]).output
    for flag in ("--data", "--out", "--limit", "--scorers", "--searches"):
        assert flag in out
    fuse = runner.invoke(app, ["retrieve", "paris", "--fuse", "rrf"])  # no --scorer: nothing to fuse
    assert one_line_error(fuse) == "trlm: error: --fuse rrf fuses a re-ranking with the first stage; pass --scorer too"
    bad = runner.invoke(app, ["bench", "retrieve", "--scorers", "trlm-fo,nope", "--out", "unused"])
    assert one_line_error(bad) == "trlm: error: --scorers: unknown nope; choose from " + ", ".join(
        __import__("trlm.scoring", fromlist=["SCORERS"]).SCORERS)
