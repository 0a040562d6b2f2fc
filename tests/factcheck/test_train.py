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


def test_train_writes_a_checker_that_reloads_exactly_and_resumes_without_redoing_steps(slice_file, tmp_path):
    out = tmp_path / "run"
    r = train_checker([slice_file], out, epochs=0.5, batch_size=4, save_every=2, progress=False)
    steps = r.steps
    assert steps == 5 and (out / "model" / "trlm.json").exists()
    meta = json.loads((out / "model" / "trlm.json").read_text())
    assert meta["kind"] == "factcheck" and meta["chunk_words"] == 300 and "I think the answer is" in meta["template"]
    checker = CrossEncoderChecker(str(out))  # the run folder resolves to its model/
    again = CrossEncoderChecker(str(out / "model"))
    pairs = [("Paris is the capital of France.", "Paris is in France.")]
    assert checker.pair_scores(pairs) == again.pair_scores(pairs)
    assert 0.0 < checker.pair_scores(pairs)[0] < 1.0
    rows = (out / "metrics.jsonl").read_text().splitlines()
    r2 = train_checker([slice_file], out, epochs=0.5, batch_size=4, save_every=2, progress=False)  # resumes: done
    assert r2.steps == steps and (out / "metrics.jsonl").read_text().splitlines() == rows


def test_classification_loss_is_cross_entropy_of_the_head():
    class Head(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("O", (), {"logits": torch.tensor([[0.0, 0.0], [2.0, 0.0]])})()
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3),
             "labels": torch.tensor([[-100, 1, -100], [-100, 0, -100]])}
    expect = (torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(-2.0)))) / 2
    assert classification_loss(Head(), batch).item() == pytest.approx(expect.item(), rel=1e-5)


@pytest.fixture(scope="module")
def trained(slice_file, tmp_path_factory):
    """A checker trained for 3 steps on the slice (its quality is not under test, its plumbing is)."""
    out = tmp_path_factory.mktemp("fc_run")
    train_checker([slice_file], out, epochs=0.3, batch_size=4, save_every=0, progress=False)
    return out / "model"


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
