"""One contender per fresh interpreter: `python -m benchmarks.worker KIND JSON_ARGS`.

Heavy imports (torch, transformers, the harness and its MLflow) happen before the clock starts, in
all three: they are paid once per process, not per trial (`sweep_overhead` reports MLflow's
once-per-sweep seconds).
KIND is `harness` (one `run_sweep` on the experiment file), `plain` (a hand-written PyTorch loop)
or `trainer` (`transformers.Trainer`). All three load the same data through the harness's own
`prepare_experiment`, with the same hyperparameters. The last line printed is a JSON object with
`wall_s` (perf_counter around the whole work, model loading included) and `peak_rss_mb`
(`ru_maxrss` of this process).
"""

from __future__ import annotations

import json
import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_harness(args: dict[str, Any]) -> dict[str, Any]:
    """Time `load_experiment` + `run_sweep` (data, training, test scoring, MLflow tracking)."""
    import mlflow  # noqa: F401 - the harness's own heavy import, once per process like torch's

    import harness.backends.local.encoder  # noqa: F401 - torch and transformers, as the others import
    from benchmarks.common import QuietView
    from harness.config import load_experiment
    from harness.sweep.loop import run_sweep

    started = time.perf_counter()
    view = QuietView()
    outcome = run_sweep(load_experiment(args["experiment"]), view)
    wall = time.perf_counter() - started
    if view.failed or len(outcome.results) != args.get("n_trials", 1):
        raise RuntimeError(f"harness sweep failed: {view.failed}")
    first = outcome.results[0]
    return {
        "wall_s": wall,
        "test_accuracy": first.metrics.accuracy,
        "trials": len(outcome.results),
    }


@dataclass
class _Setup:
    """What the hand-written contenders share: the harness's own data, config and model."""

    data: Any
    cfg: Any
    path: str
    labels: list[str]
    index: dict[str, int]


def _setup(experiment_path: str) -> _Setup:
    from harness.backends.local.encoder import resolve_model_path
    from harness.config import load_experiment
    from harness.data.prepare import prepare_experiment

    experiment = load_experiment(experiment_path)
    data, _ = prepare_experiment(experiment)
    labels = list(data.labels)
    return _Setup(
        data=data,
        cfg=experiment.config.backend,
        path=resolve_model_path(experiment.config.backend.model),
        labels=labels,
        index={label: i for i, label in enumerate(labels)},
    )


def run_plain(args: dict[str, Any]) -> dict[str, Any]:
    """A straightforward PyTorch loop: AdamW, linear warmup schedule, per-batch padding."""
    import torch
    import torch.nn.functional as F
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    started = time.perf_counter()

    setup = _setup(args["experiment"])
    data, cfg, path, labels, index = setup.data, setup.cfg, setup.path, setup.labels, setup.index
    torch.manual_seed(args["seed"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=index,
    )
    batch_size, epochs = args["batch_size"], args["n_epochs"]
    texts, y = list(data.train.texts), torch.tensor([index[lab] for lab in data.train.labels])
    steps = epochs * math.ceil(len(texts) / batch_size)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.base_learning_rate,
        fused=True,  # the same kernel the harness uses: otherwise the loop measures the optimizer
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(cfg.warmup_ratio * steps), steps
    )

    def encode(batch: list[str]) -> dict[str, Any]:
        return tokenizer(
            batch, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt"
        )

    def predict(split_texts: list[str]) -> torch.Tensor:
        model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(split_texts), cfg.eval_batch_size):
                out.append(model(**encode(split_texts[i : i + cfg.eval_batch_size])).logits)
        return torch.cat(out)

    generator = torch.Generator().manual_seed(args["seed"])
    valid_y = torch.tensor([index[lab] for lab in data.validation.labels])
    valid_accuracy = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(texts), generator=generator).tolist()
        for i in range(0, len(order), batch_size):
            rows = order[i : i + batch_size]
            logits = model(**encode([texts[r] for r in rows])).logits
            loss = F.cross_entropy(logits, y[rows])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        logits = predict(list(data.validation.texts))
        valid_accuracy.append((logits.argmax(-1) == valid_y).float().mean().item())
    test_y = torch.tensor([index[lab] for lab in data.test.labels])
    test_accuracy = (predict(list(data.test.texts)).argmax(-1) == test_y).float().mean().item()
    return {
        "wall_s": time.perf_counter() - started,
        "test_accuracy": test_accuracy,
        "valid_accuracy": valid_accuracy,
        "n_train": len(data.train),
        "n_validation": len(data.validation),
        "n_test": len(data.test),
    }


def run_trainer(args: dict[str, Any]) -> dict[str, Any]:
    """What many users would write: `transformers.Trainer` with dynamic padding."""
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    started = time.perf_counter()

    setup = _setup(args["experiment"])
    data, cfg, path, labels, index = setup.data, setup.cfg, setup.path, setup.labels, setup.index
    tokenizer = AutoTokenizer.from_pretrained(path)

    def rows(split: Any) -> list[dict[str, Any]]:
        enc = tokenizer(list(split.texts), truncation=True, max_length=cfg.max_length)
        return [
            {"input_ids": ids, "attention_mask": mask, "labels": index[label]}
            for ids, mask, label in zip(
                enc["input_ids"], enc["attention_mask"], split.labels, strict=True
            )
        ]

    import torch

    torch.manual_seed(args["seed"])  # the same new head as the other two contenders
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index
    )

    def accuracy(pred: Any) -> dict[str, float]:
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    steps = args["n_epochs"] * math.ceil(len(data.train) / args["batch_size"])
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args["batch_size"],
            per_device_eval_batch_size=cfg.eval_batch_size,
            learning_rate=cfg.base_learning_rate,
            num_train_epochs=args["n_epochs"],
            weight_decay=cfg.weight_decay,
            warmup_steps=math.ceil(cfg.warmup_ratio * steps),
            lr_scheduler_type="linear",
            eval_strategy="epoch",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=args["seed"],
            use_cpu=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=rows(data.train),
            eval_dataset=rows(data.validation),
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=accuracy,
        )
        trainer.train()
        test = trainer.predict(rows(data.test))
    return {
        "wall_s": time.perf_counter() - started,
        "test_accuracy": test.metrics.get("test_accuracy"),
    }


KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "harness": run_harness,
    "plain": run_plain,
    "trainer": run_trainer,
}


def main() -> None:
    """Run one contender and print its result as the last line."""
    kind, args = sys.argv[1], json.loads(sys.argv[2])
    result = KINDS[kind](args)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
