"""Shared report helpers."""

import numpy as np
import pytest

from trlm.core.report import bootstrap_ci, paired_diff_ci


def test_bootstrap_ci_contains_mean_and_narrows():
    rng = np.random.default_rng(1)
    small, large = rng.random(30), rng.random(3000)
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_ci(large)
    assert lo2 < large.mean() < hi2
    assert hi2 - lo2 < (hi - lo) / 3
    assert bootstrap_ci([0.4] * 10) == pytest.approx((0.4, 0.4))


def test_paired_diff_ci_is_the_mean_difference_and_rejects_unpaired_input():
    a, b = [1, 1, 0, 1, 0, 1, 1, 1], [0, 1, 0, 0, 0, 1, 0, 0]  # a wins 4 of 8 items, never loses
    d, lo, hi = paired_diff_ci(a, b)
    assert d == pytest.approx(4 / 8)
    assert 0.0 <= lo < d < hi <= 1.0  # no resample can put a below b
    assert paired_diff_ci([1, 0], [1, 0]) == (0.0, 0.0, 0.0)  # identical items: no difference in any resample
    with pytest.raises(ValueError, match="got 2 and 1"):
        paired_diff_ci([1, 0], [1])


def test_write_results_writes_results_unchanged_and_the_machine_beside_them(tmp_path, monkeypatch, request):
    import json

    import torch

    from trlm.core import device
    from trlm.core.report import write_results

    # a CPU-only host without native bf16 (an AVX2-only CPU) whose name is known: every field then has one right value
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(device, "cpu_name", lambda: "Test CPU 9000 @ 1.00GHz")
    monkeypatch.setattr(device, "resolve_device", lambda d=None: torch.device("cpu"))
    device.machine_info.cache_clear()  # read once per process; this test stubs the CPU, so read it afresh
    request.addfinalizer(device.machine_info.cache_clear)  # ...and the stubbed reading is not kept for later tests
    results = {"bm25": {"ndcg@10": 0.688}}
    write_results(tmp_path / "out", results)
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results  # schema untouched
    machine = json.loads((tmp_path / "out" / "machine.json").read_text())
    assert machine == {"device": "cpu", "cpu": "Test CPU 9000 @ 1.00GHz", "threads": torch.get_num_threads(),
                       "bf16": False, "bf16_why": "no fast bf16 on cpu", "torch": torch.__version__}
