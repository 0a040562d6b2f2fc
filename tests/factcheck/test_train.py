"""Training the cross-encoder checker on the shared loop: export, exact reload, resume, and the shipped checker."""

from __future__ import annotations

import json

import pytest
import torch

from trlm.core.io import default_data_dir
from trlm.factcheck.checkers import CrossEncoderChecker, make_checker
from trlm.factcheck.data import cg2c_row, read_cg2c
from trlm.factcheck.train import CheckerArgs, PairExamples, classification_loss, train_checker

CG2C = default_data_dir() / "factcg_cg2c/CG2C_doc.json"


@pytest.fixture(scope="module")
def slice_file(tmp_path_factory):
    """40 CG2C-Doc pairs (20 supported, 20 not), short documents first."""
    pairs = sorted(read_cg2c(CG2C), key=lambda p: len(p.doc))
    rows = [cg2c_row(p.doc, p.claim, p.label) for lab in (0, 1) for p in [q for q in pairs if q.label == lab][:20]]
    f = tmp_path_factory.mktemp("fc") / "slice.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def test_examples_carry_the_class_at_position_one_only(slice_file):
    margs = CheckerArgs()
    lm = margs.build("forward", 512, 0, torch.device("cpu"), False)
    ex = PairExamples(read_cg2c(slice_file)[:4]).examples(lm, "forward", 512)
    assert [e.labels[1] for e in ex] == [p.label for p in read_cg2c(slice_file)[:4]]
    assert all(set(e.labels[:1] + e.labels[2:]) == {-100} for e in ex)
    assert all(len(e.input_ids) <= 512 for e in ex)


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _curve(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


KW = dict(epochs=0.3, batch_size=4, save_every=2, progress=False)  # 3 steps over 38 training pairs


@pytest.fixture(scope="module")
def full_run(slice_file, tmp_path_factory):
    """An uninterrupted 3-step run (a checkpoint after step 2 and at the end)."""
    out = tmp_path_factory.mktemp("fc_full")
    return train_checker([slice_file], out, **KW)


def test_train_writes_a_checker_that_reloads_exactly(full_run):
    out = full_run.out
    assert full_run.steps == 3 and (out / "model" / "trlm.json").exists()
    meta = json.loads((out / "model" / "trlm.json").read_text())
    assert meta["kind"] == "factcheck" and meta["chunk_words"] == 300 and "I think the answer is" in meta["template"]
    checker = CrossEncoderChecker(str(out))  # the run folder resolves to its model/
    again = CrossEncoderChecker(str(out / "model"))
    pairs = [("Paris is the capital of France.", "Paris is in France.")]
    assert checker.pair_scores(pairs) == again.pair_scores(pairs)
    assert 0.0 < checker.pair_scores(pairs)[0] < 1.0


def test_an_interrupted_run_resumes_at_its_checkpoint_step_and_ends_bit_identical(slice_file, full_run, tmp_path,
                                                                                   monkeypatch):
    """3 steps (epochs 0.3 of 38 pairs, batch 4), a checkpoint every 2: killed in step 3, the rerun trains only step
    3 (one training-mode loss call; the held-out evaluation runs in eval mode) and ends with the weights and curve
    of an uninterrupted run; rerunning the finished run computes nothing."""
    import trlm.factcheck.train as fct

    full = full_run
    calls = {"train": 0, "eval": 0}

    def counted(model, batch):
        calls["train" if model.training else "eval"] += 1
        if calls["crash_at"] == calls["train"]:
            raise KeyboardInterrupt("simulated kill")
        return classification_loss(model, batch)

    monkeypatch.setattr(fct, "classification_loss", counted)
    out = tmp_path / "run"
    calls["crash_at"] = 3
    with pytest.raises(KeyboardInterrupt):
        train_checker([slice_file], out, **KW)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"] and not (out / "model").exists()
    calls.update(train=0, eval=0, crash_at=-1)
    resumed = train_checker([slice_file], out, **KW)
    assert (calls["train"], resumed.steps) == (1, 3) and calls["eval"] >= 1
    a, b = _weights(full.model_dir), _weights(resumed.model_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _curve(out) == _curve(full.out) and [r["step"] for r in _curve(out)] == [1, 2, 3]
    assert resumed.eval_loss == full.eval_loss
    calls.update(train=0, eval=0)
    again = train_checker([slice_file], out, **KW)  # a finished run: nothing is recomputed
    assert calls == {"train": 0, "eval": 0, "crash_at": -1} and again.steps == 3
    assert _curve(out) == _curve(full.out)


def test_classification_loss_is_cross_entropy_of_the_head():
    class Head(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("O", (), {"logits": torch.tensor([[0.0, 0.0], [2.0, 0.0]])})()
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3),
             "labels": torch.tensor([[-100, 1, -100], [-100, 0, -100]])}
    expect = (torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(-2.0)))) / 2
    assert classification_loss(Head(), batch).item() == pytest.approx(expect.item(), rel=1e-5)


@pytest.fixture(scope="module")
def trained(full_run):
    """A checker trained for 3 steps on the slice (its quality is not under test, its plumbing is)."""
    return full_run.model_dir


def test_a_trained_checker_chunks_a_long_document_instead_of_truncating(trained):
    checker = make_checker(str(trained))
    assert checker.chunk_words == 300
    doc = " ".join(f"Sentence {i} says that the river is long." for i in range(1500))  # ~13,500 words
    (check,) = checker.score([doc], ["The river is long."])
    assert len(check.chunk_probs) == len(checker.chunks(doc)) >= 45 and 0.0 < check.prob < 1.0


def test_minilm_without_shipped_weights_says_how_to_get_them_and_a_checker_is_no_language_model(trained):
    from trlm.core.checkpoint import ModelError
    from trlm.core.models import load_model

    with pytest.raises(ModelError, match="trlm factcheck train"):
        make_checker("minilm")
    with pytest.raises(ModelError, match="fact checker"):
        load_model(str(trained))
