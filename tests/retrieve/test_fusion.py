"""Linear fusion of a first stage and its re-ranking: z-scores, the mix, leave-one-query-out, the sweep and its CLI.

Pure algorithm tests use hand-set scores and qrels; the bench test re-ranks BM25's top 10 for the first 3 judged
TREC-DL19 queries of ../shared/data with the model-free ``length`` scorer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from trlm.core.io import InputError
from trlm.core.ranking import Ranked
from trlm.retrieve.fusion import fusion_sweep, leave_one_out, linear_fuse, zscore


def ranked(pairs):
    return [Ranked(i, float(s), id=d) for i, (d, s) in enumerate(pairs)]


def test_zscore_centres_and_scales_a_constant_list_is_all_zero_and_nan_or_inf_is_an_error():
    assert zscore([1.0, 2.0, 3.0]).tolist() == pytest.approx([-1.2247449, 0.0, 1.2247449])
    assert zscore([5.0, 5.0]).tolist() == [0.0, 0.0]
    for bad in (float("nan"), float("-inf")):
        with pytest.raises(ValueError, match="scores must be finite"):
            zscore([1.0, bad])


def test_linear_fuse_endpoints_are_the_two_rankings_and_the_middle_is_hand_computed():
    first = ranked([("a", 3.0), ("b", 2.0), ("c", 1.0)])  # z: +1.22, 0, -1.22
    rer = ranked([("c", -1.0), ("b", -2.0), ("a", -4.0)])  # z of a, b, c: -1.34, +0.27, +1.07
    assert [r.id for r in linear_fuse(first, rer, 0.0)] == ["a", "b", "c"]
    assert [r.id for r in linear_fuse(first, rer, 1.0)] == ["c", "b", "a"]
    mid = linear_fuse(first, rer, 0.5)  # a: (1.22 - 1.34)/2 = -0.06, b: +0.13, c: -0.07
    assert [r.id for r in mid] == ["b", "a", "c"]
    assert mid[0].score == pytest.approx(0.5 * float(zscore([-4.0, -2.0, -1.0])[1]))


def test_linear_fuse_ties_keep_the_first_stage_order_and_bad_input_is_an_error():
    first = ranked([("a", 1.0), ("b", 0.0)])
    swapped = ranked([("b", 1.0), ("a", 0.0)])
    assert [r.id for r in linear_fuse(first, swapped, 0.5)] == ["a", "b"]  # both fuse to 0
    with pytest.raises(ValueError, match="same ids"):
        linear_fuse(first, ranked([("a", 1.0), ("x", 0.0)]), 0.5)
    with pytest.raises(ValueError, match="same ids"):  # a repeated id cannot stand in for a missing one
        linear_fuse(first, ranked([("a", 1.0), ("a", 0.5), ("b", 0.0)]), 0.5)
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\]"):
        linear_fuse(first, swapped, 1.5)


def test_leave_one_out_takes_each_querys_weight_from_the_other_queries():
    # 3 weights (rows) x 3 queries (columns)
    curves = np.array([[0.0, 0.9, 0.9],
                       [0.2, 0.5, 0.5],
                       [1.0, 0.4, 1.0]])
    held, chosen = leave_one_out(curves, [0.0, 0.5, 1.0])
    # q0 out: means of q1, q2 per weight 0.9 / 0.5 / 0.7 -> w = 0, value 0.0
    # q1 out: means of q0, q2 0.45 / 0.35 / 1.0 -> w = 1, value 0.4; q2 out: 0.45 / 0.35 / 0.7 -> w = 1, value 1.0
    assert chosen.tolist() == [0.0, 1.0, 1.0] and held.tolist() == [0.0, 0.4, 1.0]
    tie = np.array([[0.5, 0.5], [0.5, 0.5]])  # equal everywhere: the smaller weight (closer to the first stage)
    assert leave_one_out(tie, [0.0, 1.0])[1].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="at least 2 queries"):
        leave_one_out(np.zeros((2, 1)), [0.0, 1.0])


def test_fusion_sweep_curve_runs_from_the_first_stage_to_the_re_ranking():
    qrels = {"q1": {"a": 1}, "q2": {"y": 1}}
    first = {"q1": ranked([("a", 2.0), ("b", 1.0)]), "q2": ranked([("x", 2.0), ("y", 1.0)])}
    rer = {"q1": ranked([("b", 0.0), ("a", -1.0)]), "q2": ranked([("y", 0.0), ("x", -1.0)])}
    r = fusion_sweep(first, rer, qrels, weights=[0.0, 0.5, 1.0])
    lo = 1 / np.log2(3)  # nDCG@10 of a single relevant passage at rank 2
    # w=0: q1 1, q2 lo; w=1: q1 lo, q2 1; w=0.5: every z-score cancels, so the first stage's order stands
    assert r["curve"] == pytest.approx([(1 + lo) / 2] * 3, abs=1e-4)
    assert r["first_ndcg@10"] == pytest.approx((1 + lo) / 2)
    assert r["best_weight"] == 0.0 and r["n_queries"] == 2  # a flat curve: the smallest weight
    # left out, each query takes the weight best for the other one, which is the worst for itself
    assert r["loo_weights"] == {"min": 0.0, "median": 0.5, "max": 1.0}
    assert r["loo_ndcg@10"] == pytest.approx(lo) and r["loo_diff"] == pytest.approx((lo - 1) / 2)
    with pytest.raises(ValueError, match="ascend from 0 to 1"):
        fusion_sweep(first, rer, qrels, weights=[0.5, 1.0])


def test_bench_retrieve_writes_fusion_the_cli_recomputes_it_and_a_run_without_scorers_removes_it(tmp_path):
    from typer.testing import CliRunner

    from trlm.cli import app
    from trlm.core.io import default_data_dir
    from trlm.retrieve.bench import run_bench_retrieve

    data = default_data_dir() / "retrieval_agentset" / "msmarco_trecdl19_subset"
    run_bench_retrieve(data, tmp_path / "out", k=10, scorers=["length"], limit_queries=3, min_rel=2, dense=False,
                       progress=False)
    fusion = json.loads((tmp_path / "out" / "fusion.json").read_text())
    assert fusion["stage"] == "bm25" and list(fusion["methods"]) == ["bm25+length"]  # no "(rrf)" run is fused
    m = fusion["methods"]["bm25+length"]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    # the curve's ends are the first stage alone and the pure re-ranking as results.json scored them
    assert m["curve"][0] == pytest.approx(res["bm25"]["ndcg@10"], abs=1e-4)
    assert m["curve"][-1] == pytest.approx(res["bm25+length"]["ndcg@10"], abs=1e-4)
    assert m["curve"][0] != m["curve"][-1]  # length really re-orders BM25's top 10 on these queries
    assert m["best_ndcg@10"] == pytest.approx(max(m["curve"]), abs=1e-4) and m["n_queries"] == 3
    assert (tmp_path / "out" / "fusion.png").stat().st_size > 0

    (tmp_path / "out" / "fusion.json").unlink()
    ok = CliRunner().invoke(app, ["bench", "retrieve-fusion", str(tmp_path / "out")])  # data read from the run
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "out" / "fusion.json").read_text()) == fusion
    assert "| bm25+length |" in ok.output

    # the same folder again without re-rankers: no fusion files of the earlier run stay behind
    run_bench_retrieve(data, tmp_path / "out", k=10, scorers=[], limit_queries=3, min_rel=2, dense=False,
                       progress=False)
    assert not any((tmp_path / "out" / f"fusion.{ext}").exists() for ext in ("json", "md", "png"))


def test_retrieve_fusion_without_a_run_is_a_one_line_error_and_a_malformed_run_names_its_row(tmp_path, one_line_error):
    from typer.testing import CliRunner

    from trlm.cli import app
    from trlm.retrieve.fusion import write_fusion

    bad = CliRunner().invoke(app, ["bench", "retrieve-fusion", str(tmp_path)])
    assert one_line_error(bad) == (f"trlm: error: {tmp_path}/throughput.json: no such file; RUN must be the --out "
                                   "folder of a finished `trlm bench retrieve` run")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "bm25.jsonl").write_text(json.dumps({"qid": "q1", "ranking": [["a", 1.0]]}) + "\n")
    with pytest.raises(InputError, match="no re-ranked runs"):
        write_fusion(tmp_path, {"q1": {"a": 1}}, "bm25")
    (tmp_path / "runs" / "bm25+x.jsonl").write_text(json.dumps({"qid": "q1", "ranking": [["a"]]}) + "\n")
    with pytest.raises(InputError, match=r"bm25\+x.jsonl: row 1 \(qid 'q1'\): 'ranking' must be \[doc_id, score\]"):
        write_fusion(tmp_path, {"q1": {"a": 1}}, "bm25")
    (tmp_path / "runs" / "bm25+x.jsonl").write_text('{"qid": "q1", "ranking": [["a", NaN]]}\n')
    with pytest.raises(InputError, match=r"bm25\+x.jsonl: row 1 \(qid 'q1'\): a score is NaN or infinite"):
        write_fusion(tmp_path, {"q1": {"a": 1}}, "bm25")
    (tmp_path / "runs" / "bm25+x.jsonl").write_text(json.dumps({"qid": "q1", "ranking": [["a", 1.0], ["b", 0.0]]}))
    with pytest.raises(InputError, match=r"qid 'q1': its passages are not the 1 of bm25.jsonl"):
        write_fusion(tmp_path, {"q1": {"a": 1}}, "bm25")  # a re-ranking of another --k
    (tmp_path / "runs" / "bm25+x.jsonl").write_text(json.dumps({"qid": "q9", "ranking": [["a", 1.0]]}))
    with pytest.raises(InputError, match="qid 'q9' is not in bm25.jsonl"):
        write_fusion(tmp_path, {"q1": {"a": 1}}, "bm25")


def _write_run(path, rows):
    path.write_text("".join(json.dumps({"qid": q, "ranking": r}) + "\n" for q, r in rows.items()))


def test_write_fusion_sweeps_the_queries_every_re_ranker_finished_and_only_the_methods_asked_for(tmp_path):
    from trlm.retrieve.fusion import write_fusion

    runs = tmp_path / "runs"
    runs.mkdir()
    qrels = {q: {"a": 1} for q in ("q1", "q2", "q3")}
    _write_run(runs / "bm25.jsonl", {q: [["a", 2.0], ["b", 1.0]] for q in qrels})
    _write_run(runs / "bm25+full.jsonl", {q: [["b", 0.0], ["a", -1.0]] for q in qrels})
    _write_run(runs / "bm25+cut.jsonl", {q: [["b", 0.0], ["a", -1.0]] for q in ("q1", "q2")})  # a run cut short
    _write_run(runs / "bm25+cut (rrf).jsonl", {"q1": [["zz", 0.0]]})  # fused rows are never swept (nor checked)
    out = write_fusion(tmp_path, qrels, "bm25")
    assert list(out["methods"]) == ["bm25+cut", "bm25+full"]
    assert {m["n_queries"] for m in out["methods"].values()} == {2}  # both on q1, q2: one first-stage line
    assert out["methods"]["bm25+full"]["first_ndcg@10"] == 1.0 and out["methods"]["bm25+full"]["curve"][-1] < 1.0
    _write_run(runs / "bm25+stale.jsonl", {"q1": [["x", 0.0]]})  # left from another run into this folder
    assert list(write_fusion(tmp_path, qrels, "bm25", methods=["bm25+full"])["methods"]) == ["bm25+full"]
