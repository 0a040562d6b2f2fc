"""Build the training / held-out pair files for the shipped reverse model ``trlm-ba-smol``.

    .venv/bin/python scripts/prepare_reverse_data.py --out runs/trlm-ba-smol/data

From ``DATA/alpaca_eval/judged_candidates.jsonl`` every (instruction, candidate output) row becomes a pair
``{"query": instruction, "response": output}``. Instructions with ``instruction_id % 5 == 3`` are held out
(the rerank benchmark evaluates TRLM-Ba on them; ids ≡ 4 (mod 5) are not in the data folder at all):
they go to ``eval.jsonl`` (a seeded sample of ``--eval-pairs`` pairs), everything else to ``train.jsonl``.

``--mix broad`` (the both-orders model ``trlm-foba-smol``) serves all four applications instead: a sample of the
training pairs in the best-of-N template (``task: rerank``), others in the retrieval template (``task:
retrieval``: the instruction "is answered by" its answer), FactCG's CG2C-Doc supported claims with their documents
in the citation template (``task: citation``), and plain text: the CG2C-Doc documents and the Factcheck-GPT
evidence passages that only ever occur with stance ``irrelevant`` (the fact-checking benchmark drops those rows,
and no other benchmark reads either file). Rows are shuffled, so under ``--order both`` every kind is seen in
both directions.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from trlm.core.io import default_data_dir, read_jsonl, write_jsonl
from trlm.factcheck.data import read_cg2c
from trlm.rerank.alpaca import is_heldout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data_dir())
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--eval-pairs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mix", choices=("alpaca", "broad"), default="alpaca")
    p.add_argument("--rerank-pairs", type=int, default=3000, help="broad: pairs in the best-of-N template")
    p.add_argument("--retrieval-pairs", type=int, default=900, help="broad: pairs in the retrieval template")
    p.add_argument("--citation-pairs", type=int, default=900, help="broad: CG2C-Doc claims, citation template")
    p.add_argument("--text-docs", type=int, default=1200, help="broad: plain documents (packed)")
    a = p.parse_args()
    rows = read_jsonl(a.data / "alpaca_eval" / "judged_candidates.jsonl",
                      {"instruction_id": int, "instruction": str, "output": str})
    train, held = [], []
    for r in rows:
        if not r["instruction"].strip() or not r["output"].strip():
            continue
        pair = {"query": r["instruction"], "response": r["output"], "instruction_id": r["instruction_id"],
                "generator": r["generator"]}
        (held if is_heldout(r["instruction_id"]) else train).append(pair)
    rng = random.Random(a.seed)
    rng.shuffle(train)
    held = rng.sample(held, min(a.eval_pairs, len(held)))
    if a.mix == "broad":
        train = broad_mix(a, train, rng)
    write_jsonl(a.out / "train.jsonl", train)
    write_jsonl(a.out / "eval.jsonl", held)
    kinds = {}
    for r in train:
        kind = r.get("task", "text" if "text" in r else "rerank")
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"train rows by kind: {kinds}")
    n_ins = len({r["instruction_id"] for r in train if "instruction_id" in r})
    print(f"train: {len(train)} rows ({n_ins} instructions); "
          f"held out: {len(held)} pairs sampled from instruction_id % 5 == 3")


def broad_mix(a, pairs: list[dict], rng: random.Random) -> list[dict]:
    """Pairs in the rerank and retrieval templates, CG2C-Doc citation pairs and plain documents, shuffled."""
    n_re, n_rt = min(a.rerank_pairs, len(pairs)), min(a.retrieval_pairs, max(0, len(pairs) - a.rerank_pairs))
    rows = [{**r, "task": "rerank"} for r in pairs[:n_re]]
    rows += [{**r, "task": "retrieval"} for r in pairs[n_re:n_re + n_rt]]
    cg2c = read_cg2c(a.data / "factcg_cg2c" / "CG2C_doc.json")
    supported = [p for p in cg2c if p.label == 1]
    for p in rng.sample(supported, min(a.citation_pairs, len(supported))):
        rows.append({"query": p.claim, "response": p.doc, "task": "citation", "source": "cg2c_doc"})
    docs = sorted({p.doc for p in cg2c})
    stance = read_jsonl(a.data / "factcheck_gpt" / "subtask3_claim_evidence_stance.jsonl",
                        {"evidence": str, "stance": str})
    evaluated = {r["evidence"] for r in stance if r["stance"] != "irrelevant"}
    docs += sorted({r["evidence"] for r in stance if r["stance"] == "irrelevant"} - evaluated)
    docs = rng.sample(docs, min(a.text_docs, len(docs)))
    rows += [{"text": d, "source": "document"} for d in docs]
    rng.shuffle(rows)
    return rows


if __name__ == "__main__":
    main()
