"""Training in forward / reverse / both token orders: data rendering, the loop, LoRA, exact resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from trlm.core.engine import Engine
from trlm.core.io import InputError
from trlm.core.checkpoint import read_meta
from trlm.core.models import LoadedModel, load_model
from trlm.scoring import make_scorer
from trlm.scoring.prompts import pair_request
from trlm.train.data import IGNORE, TokenExample
from trlm.train.losses import causal_lm_loss
from trlm.train.loop import TrainArgs, lr_at, train
from trlm.train.model import ModelArgs
from trlm.train.trlm_data import JsonlExamples, build_examples, read_rows

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris, a city on the Seine."),
    ("Name three primary colours.", "Red, yellow and blue are the three primary colours of paint."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Why is the sky blue?", "Sunlight is scattered by air molecules, and blue light is scattered the most."),
]
TEXTS = ["The quick brown fox jumps over the lazy dog. " * 6, "A stitch in time saves nine, as they say. " * 6]
TINY = ModelArgs(layers=1, width=32, heads=2)


@pytest.fixture(scope="module")
def engine(smol) -> Engine:
    return smol  # the session's embedded model (conftest), loaded once


@pytest.fixture()
def data(tmp_path) -> JsonlExamples:
    rows = [{"query": q, "response": a} for q, a in PAIRS] * 2 + [{"text": t} for t in TEXTS]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return JsonlExamples(path)


def _args(out: Path, **kw) -> TrainArgs:
    base = dict(out=out, steps=3, batch_size=2, seq_len=32, warmup=1, eval_every=0, save_every=0, precision="fp32",
                threads=1, progress=False, lr=1e-3)
    return TrainArgs(**{**base, **kw})


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    f = model_dir / "model.safetensors"
    return load_file(f if f.exists() else model_dir / "adapter_model.safetensors")


def _reverse_view(engine: Engine) -> LoadedModel:
    lm = engine.lm
    return LoadedModel(lm.model, lm.tokenizer, lm.name, "reverse", {"token_order": "reverse"})


def test_pairs_are_rendered_exactly_as_trlm_ba_scores_them(engine):
    rev = Engine(_reverse_view(engine))
    scorer = make_scorer("trlm-ba", engine=rev)
    rows = [{"query": q, "response": a} for q, a in PAIRS]
    examples = build_examples(rows, rev.lm, "reverse", seq_len=256)
    for (q, a), ex in zip(PAIRS, examples):
        assert pair_request(q, a, "reverse") == scorer.build(q, a)
        prefix, target = rev.encode_request(scorer.build(q, a), "reverse")
        assert list(ex.input_ids) == prefix + target
        assert ex.input_ids[0] == rev.start_id
        # reading order: the reversed answer first, the reversed question ("Question: ...") last
        assert rev.decode(list(ex.input_ids[-len(target):])[::-1]) == "Question: " + q.rstrip("?")
    masked = build_examples(rows[:1], rev.lm, "reverse", seq_len=256, mask_prompt=True)[0]
    n_scored = sum(label != IGNORE for label in masked.labels)
    assert n_scored == len(rev.encode_request(scorer.build(*PAIRS[0]), "reverse")[1])


@pytest.mark.parametrize("task", ["rerank", "retrieval", "citation"])
def test_task_rows_are_rendered_as_each_direction_s_scorer_reads_them(engine, task):
    # reverse rows = what trlm-ba / trlm-foba-rev score for the task; forward rows = what trlm-fo / trlm-foba-fwd score
    rev = Engine(_reverse_view(engine))
    rows = [{"query": q, "response": a, "task": task} for q, a in PAIRS[:2]]
    for view, order, name in ((rev, "reverse", "trlm-ba"), (engine, "forward", "trlm-fo")):
        scorer = make_scorer(name, engine=view, task=task)
        examples = build_examples(rows, view.lm, order, seq_len=256)
        for (q, a), ex in zip(PAIRS, examples):
            prefix, target = view.encode_request(scorer.build(q, a), order)
            assert list(ex.input_ids) == prefix + target
    both = build_examples(rows, engine.lm, "both", seq_len=256)
    assert both[0] == build_examples(rows[:1], rev.lm, "reverse", seq_len=256)[0]
    assert both[1] == build_examples(rows[1:], engine.lm, "forward", seq_len=256)[0]


def test_task_row_with_unknown_task_names_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"query": "q", "response": "a"}) + "\n" +
                    json.dumps({"query": "q", "response": "a", "task": "summarise"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:2: field 'task' must be one of rerank, retrieval, citation"):
        read_rows(path)


def test_long_task_response_is_cut_to_fit_and_keeps_its_start(engine):
    long = "Paris is the capital of France. " * 200
    ex = build_examples([{"query": "Where is Paris?", "response": long, "task": "citation"}], engine.lm, "forward",
                        seq_len=64)[0]
    assert len(ex.input_ids) <= 64
    assert engine.decode(list(ex.input_ids[1:])).startswith("Paris is the capital of France.")


def test_orders_reverse_text_and_both_alternates(engine):
    fwd = build_examples([{"text": t} for t in TEXTS], engine.lm, "forward", seq_len=16)
    rev = build_examples([{"text": t} for t in TEXTS], engine.lm, "reverse", seq_len=16)
    ids = engine.encode(TEXTS[0])
    assert list(fwd[0].input_ids) == [engine.start_id, *ids][:16]
    assert list(rev[0].input_ids) == [engine.start_id, *ids[::-1]][:16]
    rows = [{"query": q, "response": a} for q, a in PAIRS[:2]]
    both = build_examples(rows, engine.lm, "both", seq_len=256)
    assert both[0] == build_examples(rows[:1], engine.lm, "reverse", seq_len=256)[0]
    assert both[1] == build_examples(rows[1:], engine.lm, "forward", seq_len=256)[0]
    q, a = PAIRS[1]
    assert engine.decode(list(both[1].input_ids[1:])) == f"Question: {q.rstrip('?')}? Answer: {a}"


@pytest.mark.parametrize("order", ["forward", "reverse", "both"])
def test_train_from_scratch_in_each_order(order, data, tmp_path):
    r = train(TINY, _args(tmp_path / order, token_order=order), data, data)
    assert r.steps == 3 and r.tokens > 0 and torch.isfinite(torch.tensor(r.train_loss))
    assert r.eval_loss is not None and r.eval_loss > 0
    meta = read_meta(r.model_dir)
    assert meta["token_order"] == order
    lm = load_model(str(r.model_dir), dtype="float32")
    assert lm.token_order == order
    curve = [json.loads(line) for line in (r.out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in curve] == [1, 2, 3] and "eval_loss" in curve[-1]


def test_lora_from_embedded_checkpoint_changes_parameters(engine, data, tmp_path):
    margs = ModelArgs(init="smollm2-135m-instruct", lora_r=4)
    r = train(margs, _args(tmp_path / "lora", steps=2, precision="auto"), data)
    adapter = _weights(r.model_dir)
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero: every one was trained
    meta = read_meta(r.model_dir)
    assert meta["adapter"] is True and meta["base_model"] == "smollm2-135m-instruct"
    assert (r.model_dir / "adapter_model.safetensors").stat().st_size < 50 * 2**20
    merged = load_model(str(r.model_dir), dtype="float32")
    assert merged.token_order == "reverse"
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.model.state_dict()[name], engine.model.state_dict()[name])


def test_resume_starts_at_the_checkpoint_step_and_ends_bit_identical(data, tmp_path):
    """A run killed in step 5 resumes from its step-4 checkpoint: the second run computes the loss exactly twice, on
    the batches the uninterrupted run used at steps 5 and 6, and ends with the same weights, tokens and curve (a
    restart from step 0 would compute the loss six times)."""
    def recording(log):
        def loss(model, batch):
            log.append(batch["input_ids"].tolist())
            return causal_lm_loss(model, batch)
        return loss

    full_batches: list = []
    full = train(TINY, _args(tmp_path / "full", steps=6, save_every=2), data, loss_fn=recording(full_batches))
    assert len(full_batches) == 6

    calls = {"n": 0}

    def crash_at_step_5(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated crash")
        return causal_lm_loss(model, batch)

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(TINY, _args(out, steps=6, save_every=2), data, loss_fn=crash_at_step_5)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    resumed_batches: list = []
    resumed = train(TINY, _args(out, steps=6, save_every=2), data, loss_fn=recording(resumed_batches))
    assert resumed_batches == full_batches[4:]  # steps 5 and 6 only, on the data they had in the full run
    a, b = _weights(full.model_dir), _weights(resumed.model_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (resumed.steps, resumed.tokens, resumed.train_loss) == (full.steps, full.tokens, full.train_loss)

    def curve(r):
        return [{k: v for k, v in json.loads(x).items() if k != "tokens_per_s"}
                for x in (r.out / "metrics.jsonl").read_text().splitlines()]

    assert curve(resumed) == curve(full) and [row["step"] for row in curve(full)] == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_changed_settings(data, tmp_path):
    train(TINY, _args(tmp_path / "x", steps=2), data)
    with pytest.raises(ValueError, match="--lr"):
        train(TINY, _args(tmp_path / "x", steps=4, lr=5e-4), data)


def test_distributed_two_processes_match_single_process(data, tmp_path):
    """2 gloo processes x batch 2 == 1 process x batch 2 x grad_accum 2 (the same 4 sequences per step)."""
    single = train(TINY, _args(tmp_path / "single", steps=3, grad_accum=2, seed=1), data)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "trlm.cli", "train", str(data.path), "--out", str(tmp_path / "ddp"), "--order", "reverse",
           "--layers", "1", "--width", "32", "--heads", "2", "--steps", "3", "--batch-size", "2", "--seq-len", "32",
           "--warmup", "1", "--eval-every", "0", "--save-every", "0", "--precision", "fp32", "--threads", "1",
           "--lr", "1e-3", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _weights(single.model_dir), _weights(tmp_path / "ddp" / "model")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    ddp_curve = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert ddp_curve[-1]["loss"] == pytest.approx(single.train_loss, rel=1e-4)


def test_malformed_rows_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"query": "only a query"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: missing field 'response'"):
        read_rows(bad)
    bad.write_text('{"text": "fine"}\n\n{"text": "x"\n')
    with pytest.raises(InputError, match=r"bad.jsonl:3: not valid JSON"):
        read_rows(bad)
    bad.write_text('{"text": "fine"}\n{"prompt": "x"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: a row needs 'text'"):
        read_rows(bad)


def test_args_are_validated_with_the_flag_name(tmp_path):
    with pytest.raises(ValueError, match="--order"):
        TrainArgs(out=tmp_path, token_order="sideways")
    with pytest.raises(ValueError, match="--grad-accum"):
        TrainArgs(out=tmp_path, grad_accum=0)
    with pytest.raises(ValueError, match="--lora-r needs --init"):
        ModelArgs(lora_r=8)
    with pytest.raises(ValueError, match="--width"):
        ModelArgs(width=30, heads=4)


def test_warmup_then_cosine(tmp_path):
    a = TrainArgs(out=tmp_path, steps=110, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, a) == pytest.approx(0.1) and lr_at(9, a) == pytest.approx(1.0)
    assert lr_at(10, a) == pytest.approx(1.0) and lr_at(60, a) == pytest.approx(0.55)
    assert lr_at(110, a) == pytest.approx(0.1)


def test_cli_train_help_and_run(data, tmp_path):
    from trlm.cli import app  # the real `trlm` command, with the train commands registered

    runner = CliRunner()
    help_text = runner.invoke(app, ["train", "--help"]).output
    for flag in ("--order", "--init", "--lora-r", "--grad-accum", "--save-every", "--resume"):
        assert flag in help_text
    res = runner.invoke(app, ["train", str(data.path), "--out", str(tmp_path / "cli"), "--order", "both",
                              "--layers", "1",
                              "--width", "32", "--heads", "2", "--steps", "2", "--batch-size", "2", "--seq-len", "32",
                              "--precision", "fp32", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert read_meta(tmp_path / "cli" / "model")["token_order"] == "both"


def test_loop_takes_plain_examples_and_evaluates_with_the_given_loss(tmp_path):
    """train() accepts a list of TokenExamples (no TRLM template involved), and its eval loss is loss_fn's value:
    a loss that is 2x the LM loss gives an eval loss exactly 2x that of the plain LM loss on the same weights."""
    ex = [TokenExample(tuple(range(1, 17)), tuple(range(1, 17))),
          TokenExample(tuple(range(5, 21)), tuple(range(5, 21)))] * 2
    plain = train(TINY, _args(tmp_path / "a", steps=1, lr=1e-9, warmup=0), ex, ex)
    doubled = train(TINY, _args(tmp_path / "b", steps=1, lr=1e-9, warmup=0), ex, ex,
                    loss_fn=lambda m, b: 2 * causal_lm_loss(m, b))
    assert doubled.eval_loss == pytest.approx(2 * plain.eval_loss, rel=1e-4)
