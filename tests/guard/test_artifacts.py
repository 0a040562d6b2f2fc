"""JailbreakBench artifacts: every ``<attack>/<type>/<model>.json`` present is read (not only PAIR/GCG/JBC), an
``--attacks`` choice is checked against what the folder holds, and only jailbroken rows count."""

import json

import pytest

from trlm.core.io import InputError, default_data_dir
from trlm.guard.data import discover_attacks, jailbroken_attacks


def _artifact(root, attack, kind, model, rows):
    p = root / attack / kind
    p.mkdir(parents=True)
    (p / f"{model}.json").write_text(json.dumps({"jailbreaks": rows}))


def test_any_attack_folder_is_discovered_and_read(tmp_path):
    _artifact(tmp_path, "DSN", "white_box", "vicuna", [
        {"index": 0, "goal": "g", "prompt": "p0", "response": "r0", "jailbroken": True},
        {"index": 1, "goal": "g", "prompt": "p1", "response": "r1", "jailbroken": False}])
    _artifact(tmp_path, "prompt_with_random_search", "black_box", "llama", [
        {"index": 3, "goal": "g", "prompt": "p3", "response": "r3", "jailbroken": True}])
    (tmp_path / "notes").mkdir()  # a folder without artifacts is not an attack
    assert discover_attacks(tmp_path) == ["DSN", "prompt_with_random_search"]
    got = jailbroken_attacks(tmp_path)
    assert [(a.attack, a.target, a.index) for a in got] == [("DSN", "vicuna", 0),
                                                            ("prompt_with_random_search", "llama", 3)]
    assert [a.attack for a in jailbroken_attacks(tmp_path, ["DSN"])] == ["DSN"]
    with pytest.raises(InputError, match="no PAIR/<type>/<model>.json files; it holds DSN, prompt_with_random_search"):
        jailbroken_attacks(tmp_path, ["PAIR"])
    with pytest.raises(InputError, match="no <attack>/<type>/<model>.json"):
        jailbroken_attacks(tmp_path / "notes")


def test_the_shared_artifacts_hold_pair_gcg_and_jbc():
    assert discover_attacks(default_data_dir() / "jailbreakbench_artifacts") == ["GCG", "JBC", "PAIR"]


def test_fpr_threshold_flags_at_most_the_target_share_of_safe_scores():
    import numpy as np

    from trlm.guard.data import fpr_threshold

    safe = np.linspace(0.0, 1.0, 101)  # 101 safe prompts with scores 0.00 .. 1.00
    t = fpr_threshold(safe, 0.05)
    assert np.mean(safe >= t) <= 0.05 and np.mean(safe >= 0.95) > 0.05 - 1e-9  # 5 flagged, the 6th is not
    assert int(np.sum(safe >= t)) == 5
    assert np.sum(safe >= fpr_threshold(safe, 0.0)) == 0
