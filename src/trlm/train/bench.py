"""``trlm bench train``: training tokens/s of trlm's loop vs a plain Hugging Face ``Trainer``.

    trlm bench train --out runs/bench_train [--steps 6] [--threads 1]

Both trainers run in this process on the same model (LoRA r=32 on all linear layers of the embedded
``smollm2-135m-instruct``), the same data (reverse-order AlpacaEval pairs of the training split, rendered by
:func:`trlm.train.trlm_data.build_examples` with the loss on the question only — TRLM-Ba instruction tuning: the
model learns the part it later scores), the same micro-batch size, learning rate, warmup, clipping and
precision (bf16 autocast where the CPU/GPU has it). The runs alternate trlm, HF, HF, trlm so drift in machine
load hits both alike. Throughput is real (non-padding) tokens per second between the starts of the timed
steps; the first step of each run is a warm-up and not timed.

Where trlm's loop gains: the vocabulary projection (576 x 49152 here, a fifth of the model's FLOPs) runs only
at loss-bearing positions, it batches sequences of similar length (less padding computed), and keeps the
frozen base weights of a LoRA model in bf16 (no per-step cast under autocast).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from trlm.core.io import atomic_open, default_data_dir, write_text
from trlm.core.report import write_results

log = logging.getLogger(__name__)

MODEL = "smollm2-135m-instruct"
BATCH, SEQ_LEN, LORA_R, LR, N_PAIRS = 4, 128, 32, 1e-3, 128


def _data(path: Path, data_dir: Path) -> Path:
    """The first N_PAIRS AlpacaEval pairs outside the held-out split (instruction_id % 5 != 3)."""
    from trlm.core.io import read_jsonl
    from trlm.data.alpaca import is_heldout

    rows = read_jsonl(data_dir / "alpaca_eval" / "judged_candidates.jsonl",
                      {"instruction_id": int, "instruction": str, "output": str})
    rows = [r for r in rows if not is_heldout(r["instruction_id"]) and r["output"].strip()][:N_PAIRS]
    with atomic_open(path) as f:
        for r in rows:
            f.write(json.dumps({"query": r["instruction"], "response": r["output"]}) + "\n")
    return path


def _rate(starts: list[float], tokens: list[int]) -> float:
    """Tokens of steps 2..n-1 over the time from the start of step 2 to the start of step n."""
    return sum(tokens[1:-1]) / (starts[-1] - starts[1])


def run_trlm(data: Path, steps: int, out: Path) -> float:
    from trlm.train.losses import causal_lm_loss
    from trlm.train.loop import TrainArgs, train
    from trlm.train.model import ModelArgs
    from trlm.train.trlm_data import JsonlExamples

    starts, tokens = [], []

    def timed_loss(model, batch):
        starts.append(time.perf_counter())
        tokens.append(int(batch["attention_mask"].sum()))
        return causal_lm_loss(model, batch)

    margs = ModelArgs(init=MODEL, lora_r=LORA_R)
    args = TrainArgs(out=out, token_order="reverse", steps=steps + 2, batch_size=BATCH, seq_len=SEQ_LEN, lr=LR,
                     warmup=2, eval_every=0, save_every=0, resume=False, progress=False)
    train(margs, args, JsonlExamples(data, mask_prompt=True), loss_fn=timed_loss)
    return _rate(starts, tokens)


def run_hf_trainer(data: Path, steps: int, out: Path, bf16: bool) -> float:
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from trlm.core.models import load_model, peft_warnings
    from trlm.train.data import collate
    from trlm.train.trlm_data import build_examples, read_rows

    lm = load_model(MODEL, dtype=torch.float32)
    examples = build_examples(read_rows(data), lm, "reverse", SEQ_LEN, mask_prompt=True)
    with peft_warnings():
        model = get_peft_model(lm.model, LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules="all-linear",
                                                    task_type="CAUSAL_LM"))
    starts, tokens = [], []

    def collator(batch):
        out = collate(batch, lm.tokenizer.pad_token_id)
        tokens.append(int(out["attention_mask"].sum()))
        return out

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            starts.append(time.perf_counter())

    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=BATCH, max_steps=steps + 2,
                              learning_rate=LR, warmup_steps=2, lr_scheduler_type="cosine", max_grad_norm=1.0,
                              bf16=bf16, use_cpu=not torch.cuda.is_available(), save_strategy="no", report_to=[],
                              logging_steps=10_000, remove_unused_columns=False, dataloader_num_workers=0,
                              disable_tqdm=True, seed=0)
    Trainer(model=model, args=targs, train_dataset=examples, data_collator=collator,
            callbacks=[StepTimer()]).train()
    return _rate(starts, tokens[:len(starts)])


def run_bench(out: str | Path, steps: int = 3, threads: int = 0, data_dir: str | Path | None = None) -> dict:
    """Run both trainers (ABBA order) and write ``results.json`` and ``report.md`` into ``out``."""
    from trlm.core.device import bf16_supported, resolve_device

    if steps < 2:
        raise ValueError(f"--steps must be >= 2, got {steps}")
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    bf16 = bf16_supported(resolve_device())[0]
    with tempfile.TemporaryDirectory() as tmp:
        data = _data(Path(tmp) / "pairs.jsonl", Path(data_dir) if data_dir else default_data_dir())
        ours = [run_trlm(data, steps, Path(tmp) / "trlm-a")]
        hf = [run_hf_trainer(data, steps, Path(tmp) / "hf-a", bf16),
              run_hf_trainer(data, steps, Path(tmp) / "hf-b", bf16)]
        ours.append(run_trlm(data, steps, Path(tmp) / "trlm-b"))
    tps, hf_tps = sum(ours) / len(ours), sum(hf) / len(hf)
    results = {
        "tokens_per_s": round(tps, 1), "hf_trainer_tokens_per_s": round(hf_tps, 1), "speedup": round(tps / hf_tps, 3),
        "runs_tokens_per_s": {"trlm": [round(x, 1) for x in ours], "hf_trainer": [round(x, 1) for x in hf]},
        "config": {"model": MODEL, "lora_r": LORA_R, "batch_size": BATCH, "seq_len": SEQ_LEN, "token_order": "reverse",
                   "mask_prompt": True, "timed_steps": steps,
                   "data": f"first {N_PAIRS} AlpacaEval pairs (instruction_id % 5 != 3)",
                   "precision": "bf16 autocast" if bf16 else "fp32", "threads": torch.get_num_threads()},
    }
    write_results(out, results)
    write_text(out / "report.md", _report(results))
    return results


def _report(r: dict) -> str:
    c = r["config"]
    return f"""# trlm bench train

| trainer | tokens/s (runs) | mean tokens/s |
|---|---|---|
| trlm loop | {", ".join(map(str, r["runs_tokens_per_s"]["trlm"]))} | **{r["tokens_per_s"]}** |
| HF `Trainer` | {", ".join(map(str, r["runs_tokens_per_s"]["hf_trainer"]))} | {r["hf_trainer_tokens_per_s"]} |

Speedup: **{r["speedup"]}x** (target >= 1.2x).

Config: LoRA r={c["lora_r"]} on `{c["model"]}`, {c["token_order"]} order, batch {c["batch_size"]},
seq_len {c["seq_len"]}, {c["precision"]}, {c["threads"]} thread(s), {c["timed_steps"]} timed steps per run
(after one warm-up step), data: {c["data"]}. Runs in order trlm, HF, HF, trlm in one process.
Tokens are real (non-padding) tokens; the time is from the start of the 2nd step to the start of the last.

Loss on the question only (`mask_prompt`), as in TRLM-Ba instruction tuning.
Where the difference comes from: trlm runs the vocabulary projection only at loss-bearing positions (HF
computes and upcasts logits at every position), batches pairs of similar length (HF's default sampler pads
random batches), and keeps the frozen LoRA base weights in bf16 instead of casting fp32 weights under
autocast at every step.
"""
