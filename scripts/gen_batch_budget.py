"""Side-by-side timing of the two batching choices behind red-teaming's speed, on the embedded SmolLM2:

* the engine's generation budget: 8 RAG+FS generator prompts (~400 tokens) + 128 new tokens, decoded with
  ``max_gen_batch_tokens`` 1,024 (the scoring budget, i.e. batches of 2) and 8,192 (one batch of 8); the texts must
  be identical;
* the executor's chunk: 32 released baseline tests answered (96 tokens) in calls of 8 and of 32.

    .venv/bin/python scripts/gen_batch_budget.py --out runs/gen_batch_budget

Writes ``OUT/results.json``. One thread (``--threads``); run it with the CPU otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from trlm.core.engine import get_engine
from trlm.core.io import default_data_dir, write_json
from trlm.core.llm import ChatParams, EngineClient, as_messages
from trlm.core.schema import GenArgs
from trlm.redteam.coverage import select_cells
from trlm.redteam.generate import GeneratorArgs, RagIndex, build_messages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=default_data_dir())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    eng = get_engine("smollm2-135m-instruct")
    rag = RagIndex(a.data / "astral" / "RAG_data.jsonl")
    prompts = [eng.render_chat(as_messages(build_messages(c, 1, GeneratorArgs(), rag, None)))
               for c in select_cells("3way")[:8]]
    eng.generate(prompts[:1], GenArgs(max_new_tokens=2))  # warm-up
    res: dict = {"threads": a.threads, "generation": {}, "execution": {}}
    texts = {}
    for budget in (1024, 8192):
        eng.max_gen_batch_tokens = budget
        t = time.perf_counter()
        texts[budget] = [g[0].text for g in eng.generate(prompts, GenArgs(max_new_tokens=128, temperature=0.7))]
        res["generation"][f"max_gen_batch_tokens={budget}"] = round(time.perf_counter() - t, 1)
        print(res["generation"], flush=True)
    res["generation"]["identical_text"] = texts[1024] == texts[8192]
    rows = json.loads((a.data / "astral" / "generated_tests" / "baseline.json").read_text())[:32]
    convs = [[{"role": "user", "content": r["testcase"]}] for r in rows]
    client, params = EngineClient(eng), ChatParams(max_tokens=96)
    for chunk in (8, 32):
        t = time.perf_counter()
        for s in range(0, len(convs), chunk):
            client.complete_many(convs[s:s + chunk], params)
        res["execution"][f"chunk={chunk}, 32 tests"] = round(time.perf_counter() - t, 1)
        print(res["execution"], flush=True)
    write_json(a.out / "results.json", res)


if __name__ == "__main__":
    main()
