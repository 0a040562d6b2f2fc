"""The feature checker: lexical features on hand cases, fitting, the JSON it writes and the shipped checker."""

import json

import pytest

from trlm.core.io import InputError
from trlm.factcheck.checkers import make_checker
from trlm.factcheck.data import Pair
from trlm.factcheck.features import FEATURES, SHIPPED, FeatureChecker, fit_features, lexical_features

DOC = ("Marie Curie was born in Warsaw in 1867. She moved to Paris in 1891 to study physics. "
       "In 1903 she shared the Nobel Prize in Physics with Pierre Curie.")
SENTS = ["Marie Curie was born in Warsaw in 1867.", "She moved to Paris in 1891 to study physics.",
         "In 1903 she shared the Nobel Prize in Physics with Pierre Curie."]


def test_a_claim_stated_in_the_document_is_fully_covered():
    f = lexical_features(DOC, "Marie Curie was born in Warsaw.", SENTS)
    assert f["cov_words"] == 1.0 and f["cov_best"] == 1.0 and f["cov_names"] == 1.0
    assert f["cov_numbers"] == 1.0 and f["has_numbers"] == 0.0 and f["n_missing"] == 0.0


def test_a_wrong_number_and_an_unknown_name_lower_their_coverage():
    f = lexical_features(DOC, "Marie Curie was born in Krakow in 1869.", SENTS)
    assert f["has_numbers"] == 1.0 and f["cov_numbers"] == 0.0  # 1869 is not in the document
    assert f["cov_names"] == 0.5  # names after the first word: curie (found), krakow (not)
    assert f["cov_words"] < 1.0 and f["n_missing"] > 0.0


def test_a_negated_claim_against_an_affirmative_sentence_is_flagged():
    assert lexical_features(DOC, "Marie Curie was not born in Warsaw.", SENTS)["neg_mismatch"] == 1.0
    assert lexical_features(DOC, "Marie Curie was born in Warsaw.", SENTS)["neg_mismatch"] == 0.0


def test_two_sentence_claim_is_covered_only_by_the_top_two_sentences():
    f = lexical_features(DOC, "Marie Curie, born in Warsaw, moved to Paris.", SENTS)
    assert f["cov_best"] < 1.0 and f["cov_top2"] == 1.0


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A checker fitted on hand-made pairs: supported claims restate a sentence, unsupported ones change facts."""
    pairs = []
    for s in SENTS:
        pairs.append(Pair(DOC, s, 1))
    pairs += [Pair(DOC, "Marie Curie was born in Krakow in 1869.", 0),
              Pair(DOC, "She moved to Berlin in 1895 to study chemistry.", 0),
              Pair(DOC, "In 1911 she won the Nobel Prize in Chemistry alone.", 0),
              Pair(DOC, "Curie moved to Paris in 1891.", 1)]
    out = tmp_path_factory.mktemp("feat")
    spec = fit_features(pairs, out, progress=False)
    return out, spec


def test_fit_writes_a_checker_json_that_make_checker_loads(fitted):
    out, spec = fitted
    saved = json.loads((out / "checker.json").read_text())
    assert saved["kind"] == "factcheck-features" and saved["features"] == list(FEATURES)
    assert len(saved["coef"]) == len(FEATURES) and saved["training"]["pairs"] == 7
    checker = make_checker(str(out))
    assert isinstance(checker, FeatureChecker)
    [sup, unsup] = checker.score([DOC, DOC], ["Curie was born in Warsaw in 1867.", "Curie was born in Rome in 1901."])
    assert sup.prob > unsup.prob  # the fitted weights separate a restated fact from changed ones


def test_a_json_that_is_not_a_feature_checker_is_refused(tmp_path):
    (tmp_path / "checker.json").write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(InputError, match="not a feature checker"):
        FeatureChecker(tmp_path)
    with pytest.raises(InputError, match="trlm factcheck train --kind features"):
        FeatureChecker(tmp_path / "missing")


def test_the_shipped_feature_checker_loads_by_name_and_prefers_the_supported_claim():
    assert SHIPPED.exists()
    checker = make_checker("minilm-features")
    assert checker.spec["training"]["pairs"] > 1000  # fitted on CG2C data, not a toy set
    [sup, unsup] = checker.score([DOC, DOC], ["Marie Curie was born in Warsaw in 1867.",
                                              "Marie Curie was born in Vienna in 1880."])
    assert sup.prob > unsup.prob


def test_train_kind_features_then_score_through_the_cli(tmp_path, one_line_error):
    """`trlm factcheck train --kind features` writes checker.json; `trlm factcheck score` reads it by directory."""
    from typer.testing import CliRunner

    from trlm.cli import app

    data = tmp_path / "pairs.jsonl"
    rows = [{"doc": DOC, "claim": s, "label": 1} for s in SENTS]
    rows += [{"doc": DOC, "claim": c, "label": 0} for c in ("Marie Curie was born in Krakow in 1869.",
                                                            "She moved to Berlin in 1895 to study chemistry.")]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    res = runner.invoke(app, ["factcheck", "train", "--kind", "features", "--data", str(data), "--out",
                              str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert "fitted a feature checker on 5 pairs" in res.output
    out = tmp_path / "checked.jsonl"
    res = runner.invoke(app, ["factcheck", "score", str(data), "--checker", str(tmp_path / "m"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    checked = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(checked) == 5 and all(0.0 <= r["prob"] <= 1.0 for r in checked)
    res = runner.invoke(app, ["factcheck", "train", "--kind", "nli", "--data", str(data), "--out", str(tmp_path / "x")])
    assert "--kind" in one_line_error(res)
