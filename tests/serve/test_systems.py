"""/v1/factcheck and /v1/cite: the library's answers over HTTP, batched through the shared queue; in-process on the
shipped feature checker and the embedded model."""

from __future__ import annotations

import pytest

from trlm.cite.attribution import binary_search, exclusion_search, linear_search
from trlm.factcheck.checkers import PMIChecker, make_checker
from trlm.scoring import make_scorer
from trlm.serve.app import create_app

from .test_app import call, gather, make_service

DOC = ("The Amazon river flows through Brazil, Peru and Colombia. It carries more water than any other river. "
       "Its basin covers about seven million square kilometres.")
CLAIMS = ["The Amazon flows through Brazil.", "Mozart composed his first symphony at the age of eight."]
SENTS = ["Bananas are yellow fruits.", "The Eiffel Tower stands on the Champ de Mars in Paris, France.",
         "Rome is the capital of Italy."]
CLAIM = "The Eiffel Tower is located in Paris."


@pytest.fixture(scope="module")
def svc(smol):
    return make_service(smol, checkers=("minilm-features", "forward-pmi"), max_wait_ms=300)


@pytest.fixture(scope="module")
def app(svc):
    return create_app(service=svc)


def test_factcheck_one_document_is_the_checkers_score(app):
    r = call(app, "POST", "/v1/factcheck", json={"document": DOC, "claims": CLAIMS})
    assert r.status_code == 200, r.text
    body = r.json()
    checker = make_checker("minilm-features")
    want = checker.score([DOC, DOC], CLAIMS)
    assert body["checker"] == "minilm-features"
    for res, w in zip(body["results"], want):
        assert res["prob"] == pytest.approx(w.prob, abs=1e-6) and res["label"] == w.label
        assert res["chunk"]["index"] == w.best_chunk and res["chunk_probs"] == pytest.approx(list(w.chunk_probs))
        assert res["chunk"]["text"] == checker.chunks(DOC)[w.best_chunk] and res["threshold"] == 0.5
    assert body["results"][0]["prob"] > body["results"][1]["prob"]


def test_factcheck_pairs_with_a_pmi_checker_and_a_threshold(app, smol):
    pairs = [{"document": DOC, "claim": CLAIMS[0]}, {"document": "Paris is in France.", "claim": "Paris is French."}]
    r = call(app, "POST", "/v1/factcheck", json={"pairs": pairs, "checker": "forward-pmi", "threshold": 0.2})
    assert r.status_code == 200, r.text
    want = PMIChecker(smol, "forward-pmi").score([p["document"] for p in pairs], [p["claim"] for p in pairs],
                                                 threshold=0.2)
    got = r.json()["results"]
    assert [g["prob"] for g in got] == pytest.approx([w.prob for w in want], abs=1e-4)
    assert [g["label"] for g in got] == [w.label for w in want] and got[0]["threshold"] == 0.2


def test_factcheck_requests_share_one_checker_call(svc, app):
    calls = svc.metrics.value("trlm_batch_jobs", {"batcher": "factcheck:minilm-features"})
    bodies = [{"document": DOC, "claims": [c]} for c in CLAIMS * 2]
    rs = gather(app, [("POST", "/v1/factcheck", {"json": b}) for b in bodies])
    assert all(r.status_code == 200 for r in rs)
    assert svc.metrics.value("trlm_batch_jobs", {"batcher": "factcheck:minilm-features"}) - calls < len(bodies)
    assert rs[0].json()["results"][0]["prob"] == pytest.approx(rs[2].json()["results"][0]["prob"], abs=1e-6)


@pytest.mark.parametrize("body,status,field", [
    ({"document": DOC}, 422, "pairs"),
    ({"document": DOC, "claims": ["x"], "pairs": [{"document": DOC, "claim": "x"}]}, 422, "pairs"),
    ({"document": "  ", "claims": ["x"]}, 422, "document"),
    ({"document": DOC, "claims": ["ok", " "]}, 422, "claims"),
    ({"document": DOC, "claims": ["x"], "checker": "minicheck-ft5"}, 404, "minilm-features"),
    ({"document": DOC, "claims": ["x"], "threshold": 2}, 422, "threshold"),
])
def test_factcheck_errors_name_the_field(app, body, status, field):
    r = call(app, "POST", "/v1/factcheck", json=body)
    assert r.status_code == status, r.text
    assert field in r.json()["message"]


@pytest.mark.parametrize("search", ["linear", "binary", "exclusion"])
def test_cite_is_the_trlm_cite_search(app, smol, search):
    r = call(app, "POST", "/v1/cite", json={"claims": [CLAIM, "Rome is in Italy."], "sentences": SENTS,
                                            "search": search})
    assert r.status_code == 200, r.text
    sc = make_scorer("trlm-fo", engine=smol, task="citation", max_response_tokens=2048)
    for res, claim in zip(r.json()["results"], [CLAIM, "Rome is in Italy."]):
        if search == "binary":
            span = binary_search(claim, SENTS, sc)
            assert res["cited"] == list(range(span.start, span.end))
            assert res["scores"] == pytest.approx([span.score], abs=1e-3)
        else:
            ranked = linear_search(claim, SENTS, sc) if search == "linear" else exclusion_search(claim, SENTS, sc)
            assert res["cited"] == [x.index for x in ranked]
            assert res["scores"] == pytest.approx([x.score for x in ranked], abs=1e-3)
    assert r.json()["results"][0]["cited"][0] == 1 or search == "exclusion"


def test_cite_errors(app):
    r = call(app, "POST", "/v1/cite", json={"claims": [CLAIM], "sentences": SENTS[:1], "search": "exclusion"})
    assert r.status_code == 422 and "field 'sentences'" in r.json()["message"]
    r = call(app, "POST", "/v1/cite", json={"claims": [CLAIM], "sentences": SENTS, "scorer": "bm25"})
    assert r.status_code == 404 and "trlm-fo" in r.json()["message"]
    r = call(app, "POST", "/v1/cite", json={"claims": [CLAIM], "sentences": SENTS, "search": "fuzzy"})
    assert r.status_code == 422 and "field 'search'" in r.json()["message"]
    r = call(app, "POST", "/v1/cite", json={"claims": [CLAIM] * 5, "sentences": SENTS})
    assert r.status_code == 200
    r = call(app, "POST", "/v1/cite", json={"claims": [CLAIM], "sentences": ["s"] * 9})
    assert r.status_code == 413 and "field 'sentences'" in r.json()["message"]
