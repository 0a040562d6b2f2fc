"""Build the training / held-out pair files for the shipped reverse model ``trlm-ba-smol``.

    .venv/bin/python scripts/prepare_reverse_data.py --out runs/trlm-ba-smol/data

From ``DATA/alpaca_eval/judged_candidates.jsonl`` every (instruction, candidate output) row becomes a pair
``{"query": instruction, "response": output}``. Instructions with ``instruction_id % 5 == 3`` are held out
(the rerank benchmark evaluates TRLM-Ba on them; ids ≡ 4 (mod 5) are not in the data folder at all):
they go to ``eval.jsonl`` (a seeded sample of ``--eval-pairs`` pairs), everything else to ``train.jsonl``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from trlm.core.io import default_data_dir, read_jsonl, write_jsonl
from trlm.rerank.alpaca import is_heldout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data_dir())
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--eval-pairs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
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
    write_jsonl(a.out / "train.jsonl", train)
    write_jsonl(a.out / "eval.jsonl", held)
    print(f"train: {len(train)} pairs ({len({r['instruction_id'] for r in train})} instructions); "
          f"held out: {len(held)} pairs sampled from instruction_id % 5 == 3")


if __name__ == "__main__":
    main()
