"""``trlm distill train`` on the project's training loop: it trains, logs t, resumes bit-identically (schedule
included), exports a loadable student; data rows, the completions-only flag, the teacher top-k cache and CLI errors."""

import json
import shutil

import pytest
import torch

from trlm.core.io import write_jsonl
from trlm.distill.data import alpaca_rows, build_examples
from trlm.distill.objective import DistillObjective, TeacherTopK, dense_from_topk
from trlm.distill.run import DistillSpec, distill
from trlm.train.data import IGNORE
from trlm.train.loop import TrainArgs

ROWS = [{"prompt": f"Name a colour number {i}.", "response": f"Colour {i} is {c}, a fine colour."}
        for i, c in enumerate(["red", "blue", "green", "teal", "gold", "grey", "pink", "plum"])]


@pytest.fixture()
def data(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, ROWS)
    return path


def _args(out, **kw):
    base = dict(out=out, steps=4, batch_size=2, seq_len=64, lr=1e-3, warmup=1, eval_every=0, save_every=2,
                precision="fp32", threads=1, progress=False)
    return TrainArgs(**{**base, **kw})


def _curve(out):
    """The metrics rows without their timing."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def _count_objective_calls(monkeypatch) -> dict:
    """Count the distillation loss's evaluations and record the step of every optimizer step it is told about."""
    seen = {"calls": 0, "steps": []}
    call, after = DistillObjective.__call__, DistillObjective.after_step

    def counted_call(self, model, batch):
        seen["calls"] += 1
        return call(self, model, batch)

    def counted_after(self, loss, step, total):
        seen["steps"].append(step)
        return after(self, loss, step, total)

    monkeypatch.setattr(DistillObjective, "__call__", counted_call)
    monkeypatch.setattr(DistillObjective, "after_step", counted_after)
    return seen


def test_taid_trains_logs_t_and_resumes_from_the_checkpoint_step_bit_identically(tiny_forward_dir, data, tmp_path,
                                                                                 monkeypatch):
    spec = DistillSpec(str(tiny_forward_dir), "1", "taid", alpha=0.5)
    full = distill(spec, _args(tmp_path / "full"), data)
    curve = _curve(tmp_path / "full")
    assert [r["step"] for r in curve] == [1, 2, 3, 4] and curve[0]["t"] == 0.4
    assert all(a["t"] <= b["t"] for a, b in zip(curve, curve[1:])) and curve[-1]["t"] == 1.0

    out = tmp_path / "resumed"
    distill(spec, _args(out), data)
    shutil.rmtree(out / "checkpoints" / "step-000004")  # as if the run died after step 2's checkpoint
    (out / "model").rename(tmp_path / "discard")
    seen = _count_objective_calls(monkeypatch)
    resumed = distill(spec, _args(out), data)
    # the second run made optimizer steps 3 and 4 only (a restart from step 0 would make 4 steps, 4 loss calls)
    assert seen == {"calls": 2, "steps": [3, 4]} and resumed.steps == 4
    assert _curve(out) == curve  # loss and t of steps 3-4 recomputed identically from the saved schedule
    from safetensors.torch import load_file

    a, b = load_file(full.model_dir / "model.safetensors"), load_file(resumed.model_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="alpha"):  # the schedule's settings are checked on resume
        distill(DistillSpec(str(tiny_forward_dir), "1", "taid", alpha=0.1), _args(out, steps=6), data)
    monkeypatch.undo()
    # a large alpha lifts t above the linear floor inside the loop (the adaptive update, not just the floor)
    distill(DistillSpec(str(tiny_forward_dir), "1", "taid", alpha=2.0), _args(tmp_path / "fast", steps=6), data)
    fast = _curve(tmp_path / "fast")
    assert fast[1]["t"] > 0.4 + 0.6 * 2 / 6 + 0.1


@pytest.mark.parametrize("method", ["fkl", "rkl", "tvd", "skew-fkl", "skew-rkl", "gjs", "sft"])
def test_every_baseline_lowers_its_own_held_out_loss(tiny_forward_dir, data, tmp_path, method):
    spec = DistillSpec(str(tiny_forward_dir), "1", method)
    distill(spec, _args(tmp_path / method, steps=6, save_every=0, lr=1e-2, eval_every=1, eval_batches=2), data, data)
    curve = _curve(tmp_path / method)  # eval_loss: the same fixed batches every step
    assert curve[-1]["eval_loss"] < curve[0]["eval_loss"] and "t" not in curve[0]


def test_forward_rows_use_the_chat_template_and_completions_only_masks_the_prompt(smol):
    full = build_examples(ROWS[:1], smol.lm, "forward", 128, completions_only=False)[0]
    resp = build_examples(ROWS[:1], smol.lm, "forward", 128, completions_only=True)[0]
    prefix = smol.encode_prompt(smol.chat_prompt(ROWS[0]["prompt"]))
    assert list(full.input_ids[:len(prefix)]) == prefix and full.input_ids[-1] in smol.eos_ids
    assert smol.decode(full.input_ids[len(prefix):]).strip() == ROWS[0]["response"]
    assert all(x == IGNORE for x in resp.labels[:len(prefix)])
    assert resp.labels[len(prefix):] == resp.input_ids[len(prefix):]
    assert full.labels[0] == IGNORE and full.labels[1:] == full.input_ids[1:]


def test_alpaca_rows_never_hold_held_out_instructions():
    from trlm.core.io import default_data_dir

    train = alpaca_rows(default_data_dir())
    held = alpaca_rows(default_data_dir(), heldout=True)
    assert train and held
    assert all(r["instruction_id"] % 5 != 3 for r in train) and all(r["instruction_id"] % 5 == 3 for r in held)
    assert len({r["instruction_id"] for r in train}) == len(train)  # one candidate per instruction by default


def test_teacher_topk_is_computed_once_and_rebuilds_a_distribution(tiny_forward_dir, data, tmp_path):
    idx, lp = torch.tensor([[2, 0]]), torch.log(torch.tensor([[0.5, 0.3]]))
    dense = dense_from_topk(idx, lp, 6)
    assert dense.exp().sum().item() == pytest.approx(1.0) and dense[0, 2].exp().item() == pytest.approx(0.5)
    assert dense[0, 1].exp().item() == pytest.approx(0.2 / 4)
    cache = tmp_path / "topk"
    spec = DistillSpec(str(tiny_forward_dir), "1", "fkl", teacher_topk=8, teacher_cache=cache)
    distill(spec, _args(tmp_path / "a", steps=2, save_every=0), data)
    files = sorted(p.name for p in cache.glob("*.pt"))
    assert len(files) == 4  # 2 steps x 2 sequences, one file each
    spec_b = DistillSpec(str(tiny_forward_dir), "1", "rkl", teacher_topk=8, teacher_cache=cache)
    distill(spec_b, _args(tmp_path / "b", steps=2, save_every=0), data)
    assert sorted(p.name for p in cache.glob("*.pt")) == files  # the second run computed nothing new
    with pytest.raises(Exception, match="teacher top-k"):
        TeacherTopK(cache, str(tiny_forward_dir), 4)


def test_cli_distills_and_reports_user_errors_in_one_line(tiny_forward_dir, data, tmp_path, one_line_error):
    from typer.testing import CliRunner

    from trlm.cli import app

    r = CliRunner().invoke(app, ["distill", "train", "--teacher", str(tiny_forward_dir), "--data", str(data), "--out",
                                 str(tmp_path / "cli"), "--student-layers", "1", "--steps", "2", "--batch-size", "2",
                                 "--seq-len", "64", "--completions-only", "--save-every", "0", "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert "distilled 2 steps (taid)" in r.output and (tmp_path / "cli" / "model" / "trlm.json").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi"}\n')
    for argv, msg in ((["--data", str(bad)], "response"), (["--data", str(data), "--loss", "kd"], "--loss"),
                      (["--data", str(data), "--taid-alpha", "fast"], "--taid-alpha"),
                      (["--data", str(data), "--student-layers", "3"], "--student-layers 3")):
        r = CliRunner().invoke(app, ["distill", "train", "--teacher", str(tiny_forward_dir),
                                     "--out", str(tmp_path / "e"), "--all-tokens", *argv])
        assert msg in one_line_error(r)
