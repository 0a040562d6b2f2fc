"""AxBench setting loading, chat-template activations (prefix dropped, equal to the model's own hidden states),
and the steer CLI's one-line user errors."""

import pytest
import torch

from trlm.core.io import default_data_dir
from trlm.steer.activations import chat_ids, collect
from trlm.steer.data import DEFAULT_SETTING, ConceptExample, load_setting


@pytest.fixture(scope="module")
def setting():
    return load_setting(default_data_dir() / DEFAULT_SETTING)


def test_concept10_training_sets_pair_positives_with_genre_matched_negatives(setting):
    assert len(setting.concepts) == 10 and len(setting.train) == 936 and len(setting.eval) == 770
    for c in setting.concepts:
        tr = setting.training_set(c.id)
        assert sum(e.label == "positive" for e in tr) == 72 and len(tr) == 144
        assert all(e.concept_id == -1 and e.genre == c.genre for e in tr if e.label != "positive")
        ev = setting.eval_set(c.id)
        assert sum(e.label == "positive" for e in ev) == 36 and sum(e.label == "negative" for e in ev) == 36


def test_activations_drop_the_chat_prefix_and_equal_the_models_hidden_states(smol):
    ex = [ConceptExample("Name a red fruit.", "A strawberry is red.", 0, "positive", "text"),
          ConceptExample("What is 2 + 2?", "4", -1, "negative", "math")]
    acts = collect(smol, ex, [3, 10])
    for i, e in enumerate(ex):
        ids, skip = chat_ids(smol, e)
        assert smol.tokenizer.decode(ids[skip:]).startswith(e.prompt)  # the user header is gone, the text is not
        with torch.no_grad():
            hs = smol.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        for layer in (3, 10):  # hidden_states[l + 1] is the output of block l
            torch.testing.assert_close(acts.tokens[layer][i], hs[layer + 1][0, skip:], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="decoder blocks 0-29"):
        collect(smol, ex, [30])


def test_steer_cli_errors_are_one_line(tmp_path, one_line_error):
    from typer.testing import CliRunner

    from trlm.cli import app

    for argv, msg in ((["steer", "fit", "--out", str(tmp_path), "--layer", "3", "--method", "sae"], "--method"),
                      (["steer", "detect", "--directions", str(tmp_path / "none")], "trlm steer fit"),
                      (["steer", "fit", "--out", str(tmp_path), "--layer", "3", "--data", str(tmp_path)],
                       "metadata.jsonl"),
                      (["bench", "steer", "--out", str(tmp_path), "--layers", "a"], "--layers")):
        r = CliRunner().invoke(app, argv)
        assert msg in one_line_error(r)
