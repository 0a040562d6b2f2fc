"""Citation search: linear, binary and exclusion search on hand-made sources where the answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trlm.cite.bench import claim_metrics, load_wice, paired_cnndm, paired_top1, run_bench_cite, split_cnndm
from trlm.cite.attribution import JOINER, binary_search, cite_file, exclusion_search, join_span, linear_search
from trlm.core.io import InputError
from trlm.scoring import Scorer


class KeyScorer(Scorer):
    """Stub: a span scores 1 per 'KEY' it contains, minus a tiny length penalty; records every call."""

    name = "key-stub"

    def __init__(self):
        self.calls: list[list[str]] = []

    def score_many(self, items, progress=False):
        out = []
        for _, spans in items:
            self.calls.append(list(spans))
            out.append([s.count("KEY") - 1e-3 * len(s) for s in spans])
        return out


class TableScorer(Scorer):
    """Stub with hand-set scores per exact span text."""

    name = "table-stub"

    def __init__(self, table: dict[str, float]):
        self.table = table

    def score_many(self, items, progress=False):
        return [[self.table[s] for s in spans] for _, spans in items]


def doc(n: int, key_at: int) -> list[str]:
    return [f"Sentence {i} says KEY." if i == key_at else f"Filler {i}." for i in range(n)]


# ------------------------------------------------------------------------------------------ linear

def test_linear_ranks_by_hand_set_scores():
    sents = ["a.", "b.", "c.", "d."]
    ranked = linear_search("claim", sents, TableScorer({"a.": -3.0, "b.": -1.0, "c.": -1.0, "d.": -2.0}))
    assert [c.index for c in ranked] == [1, 2, 3, 0]  # tie between b and c: the earlier sentence first
    assert ranked[0].score == -1.0


# ------------------------------------------------------------------------------------------ binary

@pytest.mark.parametrize("n,key", [(8, 5), (7, 0), (7, 6), (1, 0), (13, 9)])
def test_binary_finds_the_key_sentence(n, key):
    sc = KeyScorer()
    span = binary_search("claim", doc(n, key), sc)
    assert (span.start, span.end) == (key, key + 1)
    assert span.path[0] == (0, n) and span.path[-1] == (key, key + 1)
    assert all(e - s >= e2 - s2 for (s, e), (s2, e2) in zip(span.path, span.path[1:]))  # spans shrink
    assert span.calls == (1 if n == 1 else 2 * (len(span.path) - 1))


def test_binary_halves_and_joiner():
    sc = KeyScorer()
    sents = doc(8, 5)
    binary_search("claim", sents, sc)
    # m = s + ceil((t - s) / 2): first call compares [0, 4) with [4, 8), each joined by one space
    assert sc.calls[0] == [JOINER.join(sents[:4]), JOINER.join(sents[4:])]
    assert sc.calls[1] == [join_span(sents, 4, 6), join_span(sents, 6, 8)]


def test_binary_tie_goes_right_and_stops_at_min_sentences():
    sents = ["a.", "b.", "c.", "d."]
    span = binary_search("claim", sents, TableScorer({"a. b.": 0.0, "c. d.": 0.0}), min_sentences=2)
    assert (span.start, span.end) == (2, 4)  # the left half wins only when strictly higher (Alg. 8)
    span = binary_search("claim", doc(9, 2), KeyScorer(), min_sentences=3)
    assert span.end - span.start <= 3 and span.start <= 2 < span.end


def test_span_within_gives_widest_short_span():
    span = binary_search("claim", doc(16, 11), KeyScorer())
    assert span.path == ((0, 16), (8, 16), (8, 12), (10, 12), (11, 12))
    assert span.within(3) == (10, 12)
    assert span.within(4) == (8, 12)
    assert span.within(1) == (11, 12)


# ------------------------------------------------------------------------------------------ exclusion

def test_exclusion_lowest_picks_the_supporting_sentence():
    sents = doc(6, 3)
    ranked = exclusion_search("claim", sents, KeyScorer())
    assert ranked[0].index == 3  # removing the KEY sentence hurts the score most
    assert ranked[0].score < ranked[1].score


def test_exclusion_highest_follows_the_pseudo_code():
    sents = doc(6, 3)
    ranked = exclusion_search("claim", sents, KeyScorer(), pick="highest")
    assert ranked[-1].index == 3
    assert ranked[0].index != 3


def test_exclusion_scores_the_source_without_each_sentence():
    sc = KeyScorer()
    sents = ["a.", "b.", "c."]
    exclusion_search("claim", sents, sc)
    assert sc.calls[0] == ["b. c.", "a. c.", "a. b."]


# ------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("claim,sents,msg", [
    ("", ["a."], "claim is empty"),
    ("c", [], "no sentences"),
    ("c", ["a.", "  "], "sentence 1"),
])
def test_bad_inputs_raise(claim, sents, msg):
    for search in (linear_search, binary_search, exclusion_search):
        with pytest.raises(ValueError, match=msg):
            search(claim, sents, KeyScorer())


def test_bad_options_raise():
    with pytest.raises(ValueError, match="min_sentences"):
        binary_search("c", ["a."], KeyScorer(), min_sentences=0)
    with pytest.raises(ValueError, match="pick"):
        exclusion_search("c", ["a.", "b."], KeyScorer(), pick="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least two"):
        exclusion_search("c", ["a."], KeyScorer())


# ------------------------------------------------------------------------------------------ metrics, data

def test_claim_metrics_hand_computed():
    gold = (frozenset({2, 5}), frozenset({7}))
    assert claim_metrics([5, 0, 1], gold) == (1.0, 0.5)
    assert claim_metrics([0, 7, 1], gold) == (0.0, 1.0)
    assert claim_metrics([0, 2, 5, 7], gold) == (0.0, 1.0)
    assert claim_metrics([1, 3, 4, 2], gold) == (0.0, 0.0)


def _wice(tmp_path, rows):
    p = tmp_path / "wice.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _row(label="supported", sets=((1,),), claim="KEY claim", n=4, key=1):
    return {"label": label, "supporting_sentences": [list(s) for s in sets], "claim": claim,
            "evidence": doc(n, key), "meta": {}}


def test_load_wice_skips_not_supported_and_checks_indices(tmp_path):
    p = _wice(tmp_path, [_row(), _row("not_supported", ()), _row("partially_supported", ((0, 2),))])
    claims = load_wice(p)
    assert [c.label for c in claims] == ["supported", "partially_supported"]
    assert claims[1].gold == (frozenset({0, 2}),)
    with pytest.raises(InputError, match="row 1: a supporting sentence index"):
        load_wice(_wice(tmp_path, [_row(sets=((9,),))]))
    with pytest.raises(InputError, match=":1: missing field 'evidence'"):
        load_wice(_wice(tmp_path, [{"label": "supported", "claim": "x", "supporting_sentences": []}]))


def test_load_wice_skip_counts_only_qualifying_claims(tmp_path):
    # skip=1 drops the first supported claim; the not_supported row between is not counted as skipped
    p = _wice(tmp_path, [_row(claim="a"), _row("not_supported", ()), _row("partially_supported", claim="b"),
                         _row(claim="c")])
    assert [c.claim for c in load_wice(p, skip=1)] == ["b", "c"]
    assert [c.claim for c in load_wice(p, limit=1, skip=2)] == ["c"]
    with pytest.raises(InputError, match="no supported or partially_supported claims selected"):
        load_wice(p, skip=3)


def test_bench_cite_wice_shape(tmp_path):
    p = _wice(tmp_path, [_row(key=1, sets=((1,),)), _row("partially_supported", key=2, sets=((2,), (0, 3)))])
    res = run_bench_cite(p, tmp_path / "out", scorers=["length"], searches=["linear", "binary"])
    assert set(res) == {"bm25", "minilm", "linear/length", "binary/length"}
    for r in res.values():
        assert set(r) >= {"top1", "recall@3", "n_claims", "supported", "partially_supported"}
        assert r["n_claims"] == 2 and r["supported"]["n_claims"] == 1
    assert res["bm25"]["top1"] == 1.0  # the claim shares the rare word KEY only with the gold sentence
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == res
    assert "| linear/length |" in (tmp_path / "out" / "report.md").read_text()
    per = json.loads((tmp_path / "out" / "per_claim.json").read_text())
    assert [r["label"] for r in per["bm25"]] == ["supported", "partially_supported"]
    assert np.mean([r["top1"] for r in per["linear/length"]]) == res["linear/length"]["top1"]
    assert "| linear/length | bm25 |" in (tmp_path / "out" / "report.md").read_text()
    speed = json.loads((tmp_path / "out" / "throughput.json").read_text())["throughput"]
    n_sent = sum(len(x["evidence"]) for x in map(json.loads, p.read_text().splitlines()))
    assert speed["linear/length"]["calls"] == n_sent  # linear search scores every sentence once


def test_bench_cite_resumed_from_cache_counts_no_scorer_calls(tmp_path):
    p = _wice(tmp_path, [_row(key=1, sets=((1,),))])
    run_bench_cite(p, tmp_path / "out", scorers=["length"])
    res = run_bench_cite(p, tmp_path / "out", scorers=["length"])  # every score now comes from the run's cache
    speed = json.loads((tmp_path / "out" / "throughput.json").read_text())["throughput"]
    assert speed["linear/length"]["calls"] == 0 and speed["linear/length"]["calls_per_s"] == 0.0
    assert "| cached |" in (tmp_path / "out" / "report.md").read_text()
    assert res["linear/length"]["n_claims"] == 1


def test_bench_cite_killed_mid_run_resumes_without_rescoring_finished_claims(tmp_path, monkeypatch):
    """4 claims, one per chunk, linear and binary search: a run killed when the scorer is first asked about claim
    2 resumes from the score caches; the rerun scores exactly what an uninterrupted run scores for claims 2 and 3,
    and nothing of claims 0 and 1."""
    import trlm.scoring as scoring

    real = scoring.make_scorer
    log: list[tuple[str, tuple[str, ...]]] = []  # (claim, spans) the inner scorer actually scored
    kill = {"claim": None}

    class Recording(Scorer):
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name

        def score_many(self, items, progress=False):
            if any(q == kill["claim"] for q, _ in items):
                raise KeyboardInterrupt("killed")
            log.extend((q, tuple(spans)) for q, spans in items)
            return self.inner.score_many(items)

    monkeypatch.setattr(scoring, "make_scorer", lambda name, **kw: Recording(real(name, **kw)))
    p = _wice(tmp_path, [_row(claim=f"KEY claim {i}", n=4 + i, key=i) for i in range(4)])
    kw = dict(scorers=["length"], searches=["linear", "binary"], chunk=1)
    full = run_bench_cite(p, tmp_path / "full", **kw)
    uninterrupted = list(log)
    log.clear()
    kill["claim"] = "KEY claim 2"
    with pytest.raises(KeyboardInterrupt):
        run_bench_cite(p, tmp_path / "out", **kw)
    first = list(log)
    assert {q for q, _ in first} == {"KEY claim 0", "KEY claim 1"}
    log.clear()
    kill["claim"] = None
    resumed = run_bench_cite(p, tmp_path / "out", **kw)
    assert log == [x for x in uninterrupted if x[0] in ("KEY claim 2", "KEY claim 3")]
    assert sorted(first + log) == sorted(uninterrupted)  # every span scored once over the two runs
    assert resumed == full
    speed = json.loads((tmp_path / "out" / "throughput.json").read_text())["throughput"]
    assert speed["linear/length"]["calls"] == (4 + 2) + (4 + 3)  # the sentences of claims 2 and 3 only


def test_paired_top1_subtracts_the_baseline_on_the_claims_both_have():
    per = {"bm25": [("supported", 1.0, 1.0), ("supported", 0.0, 0.0), ("supported", 0.0, 0.0)],
           "minilm": [("supported", 1.0, 1.0)] * 3,
           "linear/forward-mean": [("supported", 0.0, 0.0)] * 2,
           "linear/trlm-ba": [("supported", 1.0, 1.0), ("supported", 1.0, 1.0), ("supported", 0.0, 0.0)]}
    rows = {(r["method"], r["baseline"]): r for r in paired_top1(per)}
    # baselines are never compared with each other, and each scorer is compared with both baselines
    assert set(rows) == {("linear/trlm-ba", "linear/forward-mean"), ("linear/trlm-ba", "bm25"),
                         ("linear/forward-mean", "bm25")}
    assert rows["linear/trlm-ba", "linear/forward-mean"]["n_claims"] == 2  # forward-mean has only 2 claims
    assert rows["linear/trlm-ba", "linear/forward-mean"]["diff"] == 1.0
    assert rows["linear/trlm-ba", "bm25"]["diff"] == pytest.approx(1 / 3)


def test_cite_file_roundtrip_and_errors(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"claim": "KEY", "sentences": doc(5, 4)}) + "\n")
    assert cite_file(src, tmp_path / "out.jsonl", KeyScorer(), search="binary") == 1
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert row["cited"] == [4] and row["search"] == "binary"
    src.write_text(json.dumps({"claim": "KEY", "sentences": ["a", ""]}) + "\n")
    with pytest.raises(InputError, match="row 1: source sentence 1"):
        cite_file(src, tmp_path / "out.jsonl", KeyScorer())
    with pytest.raises(ValueError, match="unknown search"):
        cite_file(src, tmp_path / "out.jsonl", KeyScorer(), search="ternary")


def test_paired_cnndm_differences_and_bootstrap_ci_against_each_baseline():
    # hand-set per-highlight values: linear/x beats bm25 by exactly 10 cosine on every highlight (CI collapses to
    # the point) and forward-mean by 20 ROUGE-L; forward-mean, itself a scorer method, also gets a row against
    # bm25, while bm25 never gets a row of its own
    per = {"bm25": {"minilm_cos": [50.0, 60.0, 70.0], "rouge_l": [30.0, 30.0, 30.0]},
           "linear/forward-mean": {"minilm_cos": [40.0, 40.0, 40.0], "rouge_l": [10.0, 20.0, 30.0]},
           "linear/x": {"minilm_cos": [60.0, 70.0, 80.0], "rouge_l": [30.0, 40.0, 50.0]}}
    rows = {(r["method"], r["baseline"]): r for r in paired_cnndm(per)}
    assert set(rows) == {("linear/x", "linear/forward-mean"), ("linear/x", "bm25"), ("linear/forward-mean", "bm25")}
    assert rows[("linear/x", "bm25")]["minilm_cos"] == pytest.approx([10.0, 10.0, 10.0])
    assert rows[("linear/x", "linear/forward-mean")]["rouge_l"] == pytest.approx([20.0, 20.0, 20.0])
    d, lo, hi = rows[("linear/x", "linear/forward-mean")]["minilm_cos"]
    assert d == pytest.approx(30.0) and lo <= d <= hi


def test_split_cnndm():
    assert split_cnndm("<t> a cat sat . it purred ! </t>") == ["a cat sat .", "it purred !"]
    assert split_cnndm("<t> first one .second one .third . </t>") == ["first one .", "second one .", "third ."]
    assert split_cnndm("pi is 3.14 . yes") == ["pi is 3.14 .", "yes"]


# ------------------------------------------------------------------------------------------ real model

def test_trlm_fo_cites_the_supporting_sentence(smol):
    from trlm.scoring import make_scorer

    sc = make_scorer("trlm-fo", smol, task="citation")
    claim = "The Eiffel Tower is located in Paris."
    sents = ["Bananas are yellow fruits.", "The stock market fell on Monday.",
             "The Eiffel Tower stands on the Champ de Mars in Paris, France.", "Cats sleep for most of the day."]
    assert linear_search(claim, sents, sc)[0].index == 2
    span = binary_search(claim, sents, sc)
    assert (span.start, span.end) == (2, 3)
    assert exclusion_search(claim, sents, sc)[0].index == 2


def test_bench_cite_cnndm_skip_selects_later_articles(tmp_path):
    # article 2 has two highlight sentences, articles 1 and 3 one each: skip=1, limit=1 must select article 2
    # alone (1 article, 2 highlights), and its per-highlight file and report say so
    d = tmp_path / "cnndm"
    d.mkdir()
    (d / "src_articles.txt").write_text("<t> a cat sat . a dog ran . </t>\n<t> rain fell . sun rose . </t>\n"
                                        "<t> fish swam . birds flew . </t>\n")
    (d / "ref_highlights.txt").write_text("<t> a cat sat . </t>\n<t> rain fell . the sun rose . </t>\n"
                                          "<t> fish swam . </t>\n")
    res = run_bench_cite(d, tmp_path / "out", scorers=[], skip=1, limit=1)
    assert (res["bm25"]["n_articles"], res["bm25"]["n_highlights"]) == (1, 2)
    per = json.loads((tmp_path / "out" / "per_highlight.json").read_text())
    assert per["highlights"] == ["rain fell .", "the sun rose ."]
    assert per["methods"]["bm25"]["pick"] == [0, 1]  # each highlight cites its matching article sentence
    assert "(after the first 1)" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(InputError, match="no articles after skipping 3 of 3"):
        run_bench_cite(d, tmp_path / "out2", scorers=[], skip=3)
