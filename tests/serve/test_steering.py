"""Per-request steering on completions and chat: rows of one batch steered row by row in the same forward pass,
each giving exactly what it gives alone; in-process on the embedded model with directions saved like
`trlm steer fit` writes them."""

from __future__ import annotations

import json

import pytest
import torch

from trlm.core.schema import GenArgs
from trlm.serve.app import create_app
from trlm.steer import Additive, steer
from trlm.steer.detect import Direction, load_directions, save_directions

from .test_app import call, gather, make_service
from .test_overload import _spy_rows


def random_directions(path, smol, layer: int = 5, concepts=(3, 7)):
    """Unit directions of the model's width (test data for steering plumbing, not fitted concepts)."""
    g = torch.Generator().manual_seed(0)
    d = smol.model.config.hidden_size
    save_directions(path, "diffmean", layer, smol.name,
                    [Direction(c, torch.randn(d, generator=g), 2.0 + c) for c in concepts])
    return path


CHAT = [{"role": "user", "content": "Tell me about the weather in spring."}]
STEER = [{"directions": "d", "concept": 7, "factor": 12.0}]


@pytest.fixture(scope="module")
def dirs(smol, tmp_path_factory):
    return random_directions(tmp_path_factory.mktemp("dirs") / "d", smol)


def test_steered_and_unsteered_requests_in_one_batch_equal_each_alone(smol, dirs, monkeypatch):
    steered = {"messages": CHAT, "max_tokens": 12, "temperature": 0.7, "seed": 1, "steer": STEER}
    plain = {"messages": CHAT, "max_tokens": 12, "temperature": 0.7, "seed": 1}
    other = {"messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 12, "temperature": 0.7,
             "seed": 1, "steer": [{"directions": "d", "concept": 3, "factor": -6.0}]}
    alone_app = create_app(service=make_service(smol, batching=False, directions=(("d", str(dirs)),)))
    alone = [call(alone_app, "POST", "/v1/chat/completions", json=b).json() for b in (steered, plain, other)]

    svc = make_service(smol, max_wait_ms=400, directions=(("d", str(dirs)),))
    rows = _spy_rows(monkeypatch, smol)
    batched = [r.json() for r in gather(create_app(service=svc), [("POST", "/v1/chat/completions", {"json": b})
                                                                 for b in (steered, plain, other)])]
    assert svc.metrics.value("trlm_batch_jobs", {"batcher": "generate"}) == 1  # one engine call ...
    assert rows[0] == 3  # ... whose forward passes carry all three rows
    for a, b in zip(alone, batched):
        assert a["choices"] == b["choices"] and a["usage"] == b["usage"]
    assert alone[0]["choices"][0]["message"] != alone[1]["choices"][0]["message"]  # steering changed the answer

    # the steered answer is `trlm steer generate`'s intervention: h + factor * max_act * w at the set's layer
    meta, concepts = load_directions(dirs)
    prompt = smol.render_chat(CHAT)
    with steer(smol.model, {meta["layer"]: Additive(concepts[7].w, 12.0 * concepts[7].max_act)}):
        want = smol.generate([prompt], GenArgs(max_new_tokens=12, temperature=0.7, seed=1))[0][0]
    assert alone[0]["choices"][0]["message"]["content"] == want.text.strip()


def test_streamed_steered_completion_is_the_plain_steered_text(smol, dirs):
    app = create_app(service=make_service(smol, directions=(("d", str(dirs)),)))
    body = {"prompt": "The best thing about mornings is", "max_tokens": 10, "temperature": 0, "steer": STEER}
    whole = call(app, "POST", "/v1/completions", json=body).json()["choices"][0]["text"]
    r = call(app, "POST", "/v1/completions", json={**body, "stream": True})
    pieces = [json.loads(line[6:])["choices"][0]["text"] for line in r.text.split("\n")
              if line.startswith("data: {")]
    assert "".join(pieces) == whole


@pytest.mark.parametrize("spec,field", [
    ({"directions": "nope", "concept": 3, "factor": 1.0}, "steer.0.directions"),
    ({"directions": "d", "concept": 99, "factor": 1.0}, "steer.0.concept"),
    ({"directions": "d", "concept": 3, "factor": 1e9}, "steer.0.factor"),
])
def test_bad_steering_is_422_naming_the_field(smol, dirs, spec, field):
    app = create_app(service=make_service(smol, directions=(("d", str(dirs)),)))
    r = call(app, "POST", "/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "steer": [spec]})
    assert r.status_code == 422 and f"field '{field}'" in r.json()["message"], r.text


def test_steering_without_served_directions_is_422(smol):
    r = call(create_app(service=make_service(smol)), "POST", "/v1/completions",
             json={"prompt": "Hi", "max_tokens": 2, "steer": STEER})
    assert r.status_code == 422 and "--directions" in r.json()["message"]


def test_directions_for_another_width_are_refused_at_start(smol, tmp_path):
    save_directions(tmp_path / "x", "diffmean", 2, "other-model", [Direction(1, torch.ones(8), 1.0)])
    with pytest.raises(ValueError, match="residual stream has 576"):
        make_service(smol, directions=(("x", str(tmp_path / "x")),))
