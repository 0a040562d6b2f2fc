"""ReFT-r1 on the training loop (tiny model): only w trains; at every optimizer step its gradient is orthogonal to
w and w stays unit-norm; the L1 weight anneals from 0; the frozen base weights do not change."""

import json

import torch

from trlm.steer.data import ConceptExample
from trlm.steer.reft import ReftSpec, _orthogonal_to, fit_reft


def test_gradient_projection_removes_the_component_along_w():
    w = torch.tensor([3.0, 4.0])
    g = _orthogonal_to(w)(torch.tensor([1.0, 1.0]))
    assert abs(float(g @ w)) < 1e-6 and torch.allclose(g, torch.tensor([1.0, 1.0]) - 1.4 * torch.tensor([0.6, 0.8]))


def test_fit_reft_trains_only_w_orthogonally_and_keeps_it_unit(tiny_forward_dir, tmp_path, monkeypatch):
    ex = [ConceptExample(f"Say something {i}.", f"Something number {i} about cats and more cats.", 0,
                  "positive" if i % 2 else "negative", "text") for i in range(12)]
    built, dots, norms = [], [], []
    original = ReftSpec.build

    def build(self, *a, **kw):
        lm = original(self, *a, **kw)
        w = lm.model.reft_r1.w
        def record(p):  # runs after every gradient hook, once the step's gradient is in (before the optimizer step)
            dots.append(float(p.grad @ p.detach()))
            norms.append(float(p.detach().norm()))

        w.register_post_accumulate_grad_hook(record)
        built.append((lm, {k: v.clone() for k, v in lm.model.state_dict().items() if "reft_r1" not in k}))
        return lm

    monkeypatch.setattr(ReftSpec, "build", build)
    w = fit_reft(str(tiny_forward_dir), 1, ex, tmp_path / "r", epochs=2, batch_size=6, seq_len=64)
    lm, base = built[0]
    assert [n for n, p in lm.model.named_parameters() if p.requires_grad] == ["reft_r1.w"]
    after = {k: v for k, v in lm.model.state_dict().items() if "reft_r1" not in k}
    assert all(torch.equal(base[k], after[k]) for k in base)  # the frozen model did not move
    assert len(dots) == 4 and max(abs(d) for d in dots) < 1e-6  # gradient ⟂ w at each of the 4 steps
    assert all(abs(n - 1.0) < 1e-5 for n in norms[1:])  # renormalised after every step (the first is the init)
    assert w.shape == (32,) and abs(float(w.norm()) - 1.0) < 1e-5
    meta = json.loads((tmp_path / "r" / "model" / "reft_r1.json").read_text())
    assert meta["layer"] == 1
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lambda"] for r in rows] == [0.005 * k / 4 for k in range(4)]  # annealed from 0
