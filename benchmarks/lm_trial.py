"""One local_lm trial against a plain PEFT loop and TRL's SFTTrainer on the same work.

The same SmolLM2-135M LoRA run three ways, each in a fresh interpreter (its own peak RSS),
repeats interleaved, best of `REPEATS`: rotten_tomatoes as the demo prepares it, cut to
`TRAIN` / `SCORED` / `SCORED` examples; prompt + `"\\n\\n###\\n\\n"`, completion `" " + label` and
the end token, loss on the completion only; LoRA rank 8, alpha 16, no dropout, every linear
layer; 1 epoch, batch 8, learning rate 4e-4, AdamW, linear schedule with 6% warmup, gradient
clipping at 1.0; then the validation and test sets scored by each label's log-probability.

- `harness`: `LocalLMBackend.fine_tune` + `predict` (rates pinned, so no calibration is timed).
- `plain`: what a careful user writes with PEFT: right padding, `labels=` with -100 on the
  prompt and padding, the model's own loss; scoring by the last prompt position's logits.
- `trl`: `trl.SFTTrainer` on a prompt/completion dataset (completion-only loss), scored as
  `plain` scores.

Figures: wall time and peak RSS ratios harness/plain (targets 1.05 and 1.2) and harness/TRL;
training tokens per second harness/plain (target >= 1.0) and for each contender, with one
definition for all three: the non-padding tokens of the training batches (prompt and completion,
every example, every epoch) over the wall time of the training loop alone (its batching, forward,
backward and optimizer steps; not loading, tokenizing, validation or scoring). The harness's
loop times itself (`LMRun.train_seconds`); the plain loop is timed around its batches; TRL's
around `trainer.train()`.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, BenchResult, Figure

REPEATS = 2
TRAIN, SCORED = 64, 100
CONTENDERS = ("harness", "plain", "trl")
HYPER = {"epochs": 1, "batch_size": 8, "lr": 4e-4, "max_length": 64, "rank": 8, "alpha": 16}
SEPARATOR = "\n\n###\n\n"


def run() -> BenchResult:
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in CONTENDERS}
    with tempfile.TemporaryDirectory(prefix="bench-lm-") as tmp:
        for repeat in range(REPEATS):
            for kind in CONTENDERS:
                runs[kind].append(_worker(kind, f"{tmp}/{kind}-{repeat}"))
    best = {k: min(r["wall_s"] for r in runs[k]) for k in CONTENDERS}
    peak = {k: min(r["peak_rss_mb"] for r in runs[k]) for k in CONTENDERS}
    speed = {k: max(r["train_tokens_per_s"] for r in runs[k]) for k in CONTENDERS}
    ratio, memory = best["harness"] / best["plain"], peak["harness"] / peak["plain"]
    throughput = speed["harness"] / speed["plain"]
    figures = [
        Figure("training tokens/s harness/plain PEFT", throughput, ">= 1.0", throughput >= 1.0),
        Figure("time harness/plain PEFT", ratio, "<= 1.05", ratio <= 1.05),
        Figure("peak RSS harness/plain PEFT", memory, "<= 1.2", memory <= 1.2),
        Figure("time harness/TRL SFTTrainer", best["harness"] / best["trl"], "-", True),
        Figure("peak RSS harness/TRL SFTTrainer", peak["harness"] / peak["trl"], "-", True),
    ]
    for kind in CONTENDERS:
        figures.append(Figure(f"{kind} training", speed[kind], "-", True, "tok/s"))
        figures.append(Figure(f"{kind} wall (best of {REPEATS})", best[kind], "-", True, "s"))
    raw = {"runs": runs, "hyperparameters": HYPER, "train": TRAIN, "scored": SCORED}
    return BenchResult("lm_trial", figures, raw)


def _worker(kind: str, folder: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.lm_trial", kind, folder]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------- inside a fresh worker


def _data() -> Any:
    from harness.config import load_experiment
    from harness.data.prepare import prepare_experiment
    from harness.records import Split

    data, _ = prepare_experiment(load_experiment(str(ROOT / "experiments" / "smollm2_lora.yaml")))

    def cut(split: Split, n: int) -> Split:
        return Split(split.texts[:n], split.labels[:n])

    return data.__class__(
        train=cut(data.train, TRAIN),
        validation=cut(data.validation, SCORED),
        test=cut(data.test, SCORED),
        labels=data.labels,
        digest=data.digest,
        ordinal=data.ordinal,
        name=data.name,
    )


def _harness(data: Any, model: str, folder: str) -> tuple[int, float]:
    from harness.backends.local.config import LocalLMBackendConfig
    from harness.backends.local.lm import LocalLMBackend
    from harness.records import TrialSpec

    config = LocalLMBackendConfig.model_validate(
        {
            "kind": "local_lm",
            "model": model,
            "device": "cpu",
            "max_length": HYPER["max_length"],
            "base_learning_rate": HYPER["lr"],
            "models_dir": folder,
            "calibration": {
                "train_seconds_per_1k_tokens": 1.0,
                "infer_seconds_per_1k_tokens": 1.0,
                "as_of": "2026-01-01",
            },
        }
    )
    backend = LocalLMBackend(config)
    spec = TrialSpec(0, int(HYPER["epochs"]), 1.0, int(HYPER["batch_size"]), model, seed=0)
    loop = _time_loop()
    trained = backend.fine_tune(spec, data, lambda epoch: False)
    backend.predict(trained.model_ref, data.test.texts, data.labels)
    return trained.train_cost.trained_tokens, loop["seconds"]


def _time_loop() -> dict[str, float]:
    """The harness loop's own clock (`LMRun.train_seconds`), read after every epoch."""
    from harness.backends.local import lm

    timed, epoch = {"seconds": 0.0}, lm.train_epoch

    def timed_epoch(run: Any, progress: Any, description: str) -> float:
        loss = epoch(run, progress, description)
        timed["seconds"] = run.train_seconds
        return loss

    lm.train_epoch = timed_epoch  # type: ignore[assignment]
    return timed


def _examples(tokenizer: Any, data: Any) -> list[tuple[list[int], int]]:
    sep = tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]
    out = []
    for text, label in zip(data.train.texts, data.train.labels, strict=True):
        completion = [*tokenizer(" " + label, add_special_tokens=False)["input_ids"]]
        completion.append(tokenizer.eos_token_id)
        room = HYPER["max_length"] - len(sep) - len(completion)
        prompt = [*tokenizer(text, add_special_tokens=False)["input_ids"][:room], *sep]
        out.append(([*prompt, *completion], len(prompt)))
    return out


def _score(model: Any, tokenizer: Any, texts: Any, labels: Any) -> list[int]:
    """Each text's best label by its first token's log-probability at the last prompt token."""
    import torch

    first = [tokenizer(" " + y, add_special_tokens=False)["input_ids"][0] for y in labels]
    tokenizer.padding_side = "left"
    model.eval()
    best: list[int] = []
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            batch = tokenizer(
                [t + SEPARATOR for t in texts[i : i + 32]], return_tensors="pt", padding=True
            )
            logits = model(**batch).logits[:, -1, first]
            best += logits.argmax(-1).tolist()
    return best


def _lora(model: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=HYPER["rank"],
        lora_alpha=HYPER["alpha"],
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _plain(data: Any, model_path: str, folder: str) -> tuple[int, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = _lora(AutoModelForCausalLM.from_pretrained(model_path))
    examples = _examples(tokenizer, data)
    bs = int(HYPER["batch_size"])
    steps = HYPER["epochs"] * math.ceil(len(examples) / bs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=HYPER["lr"], weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(0.06 * steps), steps)
    train_s, tokens = 0.0, 0
    for _ in range(int(HYPER["epochs"])):
        began = time.perf_counter()
        model.train()
        for i in range(0, len(examples), bs):
            rows = examples[i : i + bs]
            width = max(len(ids) for ids, _ in rows)
            ids = torch.tensor([s + [tokenizer.eos_token_id] * (width - len(s)) for s, _ in rows])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in rows])
            labels = ids.clone()
            for r, (s, p) in enumerate(rows):
                labels[r, :p] = -100
                labels[r, len(s) :] = -100
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            tokens += int(mask.sum())
        train_s += time.perf_counter() - began
        _score(model, tokenizer, data.validation.texts, data.labels)
    _score(model, tokenizer, data.test.texts, data.labels)
    return tokens, train_s


def _trl(data: Any, model_path: str, folder: str) -> tuple[int, float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = {
        "prompt": [t + SEPARATOR for t in data.train.texts],
        "completion": [" " + y for y in data.train.labels],
    }
    args = SFTConfig(
        output_dir=folder,
        num_train_epochs=HYPER["epochs"],
        per_device_train_batch_size=HYPER["batch_size"],
        learning_rate=HYPER["lr"],
        lr_scheduler_type="linear",
        warmup_steps=math.ceil(0.06 * math.ceil(TRAIN / HYPER["batch_size"]) * HYPER["epochs"]),
        max_grad_norm=1.0,
        max_length=HYPER["max_length"],
        save_strategy="no",
        report_to=[],
        logging_strategy="no",
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    model = _lora(AutoModelForCausalLM.from_pretrained(model_path))
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer
    )
    began = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - began
    _score(model, tokenizer, data.validation.texts, data.labels)
    _score(model, tokenizer, data.test.texts, data.labels)
    tokens = sum(len(ids) for ids, _ in _examples(tokenizer, data))
    return tokens, train_s


def _main(kind: str, folder: str) -> None:
    import torch

    from harness.backends.local._lm_models import offline_smollm2

    torch.set_num_threads(torch.get_num_threads())
    data, model = _data(), str(offline_smollm2())
    work = {"harness": _harness, "plain": _plain, "trl": _trl}[kind]
    began = time.perf_counter()
    tokens, train_s = work(data, model, folder)
    wall = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    Path(folder).mkdir(parents=True, exist_ok=True)
    print(
        json.dumps(
            {
                "wall_s": wall,
                "peak_rss_mb": peak,
                "train_tokens": tokens,
                "train_tokens_per_s": tokens / train_s,
            }
        )
    )


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
