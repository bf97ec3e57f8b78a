"""Fine-tune the generator (LoRA by default) on the company's own history: `chatbot finetune
generator`. The embedder's contrastive fine-tuning lives in ``chatbot.training.embedder``.

The training loop reads top to bottom (after nanoGPT):

1. Build supervised examples from dialogues, FAQs and optional Bitext pairs, each with sources
   retrieved from other records (``chatbot.training.data.build_examples``).
2. Tokenise with the prompt the server sends; the loss covers only the answer tokens.
3. Train with AdamW, warm-up then linear decay, bf16 on GPU and fp32 on CPU (bf16 autocast with
   ``cpu_bf16``), until the step or time budget is spent; a held-out split gives the eval loss
   before and after.
4. Save the adapter (or the full model with ``full=True``), the resolved config, the metrics and
   a TRAINING.md that records command, data, steps and metrics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from chatbot.config import Settings
from chatbot.errors import ConfigError, ModelError
from chatbot.evaluation.datasets import LabelledText, bitext_split, documents_from_rows
from chatbot.generation.local import DEFAULT_ADAPTER
from chatbot.training.data import batches, build_examples, encode, split_examples
from chatbot.types import Document

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """Everything that shapes a run; saved next to the result as config.json."""

    output: str = str(DEFAULT_ADAPTER)
    full: bool = False  # full fine-tuning instead of LoRA
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                     "up_proj", "down_proj")
    lr: float = 2e-4  # LoRA; use ~2e-5 with full=True
    batch_size: int = 4
    max_steps: int = 300
    time_budget_min: float = 0.0  # stop after this much training time (0: no limit)
    warmup_steps: int = 20
    max_length: int = 640  # tokens per example (prompt is cut from the left, target kept)
    max_target_tokens: int = 192
    cpu_bf16: bool = False  # bf16 autocast on CPU (1.9x faster on CPUs with native bf16, e.g.
    # AVX512-BF16/AMX; measured in README's fine-tuning section); the default stays fp32
    eval_fraction: float = 0.08
    max_eval_examples: int = 48  # held-out examples scored (a CPU forward pass is not free)
    eval_every: int = 0  # steps between eval-loss reports (0: only before and after)
    bitext: str = ""  # path to the Bitext CSV to add its training split ('' = none)
    bitext_limit: int = 1500  # Bitext training pairs used at most
    seed: int = 0
    model: str = ""  # base model; '' = the default SmolLM2 (settings.generator_model)


def eval_loss(model: Any, data: Sequence[tuple[Any, Any, Any]], device: str) -> float:
    """Mean loss per answer token over the held-out batches."""
    import torch

    total = tokens = 0.0
    model.eval()
    with torch.inference_mode():
        for ids, mask, labels in data:
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                        labels=labels.to(device))
            n = float((labels[:, 1:] != -100).sum())
            total += float(out.loss) * n
            tokens += n
    model.train()
    return total / tokens if tokens else float("nan")


# --- the run --------------------------------------------------------------------------------


def finetune_generator(settings: Settings, config: FinetuneConfig, *,
                       documents: Sequence[Document] | None = None, embedder: Any = None,
                       progress: bool = True) -> dict[str, Any]:
    """Train, evaluate and save; returns the metrics (also written to metrics.json)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatbot.generation.local import ensure_default_model, resolve_device
    from chatbot.knowledge.ingest import load_knowledge_base
    from chatbot.retrieval.search import Retriever

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device, dtype = resolve_device(settings)
    if device == "cpu":
        torch.set_num_threads(settings.resolved_threads)
    # Mixed precision: weights and optimizer state stay fp32, matmuls run in bf16.
    autocast = device == "cuda" or config.cpu_bf16

    # 1. examples
    if documents is None:
        documents = load_knowledge_base(settings.knowledge_base)
    documents = list(documents)
    extra: list[tuple[str, str]] = []
    retrieval_docs = list(documents)
    if config.bitext:
        train_rows, _ = bitext_split(Path(config.bitext))
        train_rows = train_rows[:: max(1, len(train_rows) // max(1, config.bitext_limit))]
        extra = [(r["instruction"], r["response"]) for r in train_rows][: config.bitext_limit]
        retrieval_docs += [dataclasses.replace(d, record_id=f"bitext-{d.record_id}")
                           for d in documents_from_rows(
                               [LabelledText(q, "", answer) for q, answer in extra])]
    retriever = Retriever.from_documents(retrieval_docs, settings, embedder, progress=progress)
    examples, counts = build_examples(documents, retriever, settings, extra, progress)
    train_ex, held_ex = split_examples(examples, config.eval_fraction)
    if not train_ex or not held_ex:
        raise ConfigError(f"too few examples to train and evaluate ({len(examples)}): add "
                          "dialogues or FAQs to the knowledge base")

    # 2. model and tokens
    base = config.model or settings.generator_model or str(ensure_default_model(settings))
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load base model {base}: {error}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not config.full:
        from peft import LoraConfig, get_peft_model

        targets = [t for t in config.lora_targets
                   if any(name.endswith(t) for name, _ in model.named_modules())]
        model = get_peft_model(model, LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=targets, task_type="CAUSAL_LM"))
    model.to(device).train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    def enc(example: Any) -> tuple[list[int], list[int]]:
        return encode(example, tokenizer, config.max_length, config.max_target_tokens)

    train_enc = [enc(e) for e in train_ex]
    scored = held_ex[:: max(1, len(held_ex) // max(1, config.max_eval_examples))]
    scored = scored[: config.max_eval_examples]
    held_batches = batches([enc(e) for e in scored], config.batch_size, tokenizer.pad_token_id,
                           random.Random(0))

    # 3. train
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.lr, weight_decay=0.0)

    planned = config.max_steps  # shrunk to fit the time budget once the step time is known

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return config.lr * (step + 1) / config.warmup_steps
        return config.lr * max(0.1, 1 - (step - config.warmup_steps) /
                               max(1, planned - config.warmup_steps))

    loss_before = eval_loss(model, held_batches, device)
    losses: list[float] = []
    evals: list[tuple[int, float]] = []
    seen = step = 0
    train_started = time.perf_counter()
    queue: list[tuple[Any, Any, Any]] = []
    bar = tqdm(total=config.max_steps, desc="fine-tuning", disable=not progress)
    while step < planned:
        if not queue:
            queue = batches(train_enc, config.batch_size, tokenizer.pad_token_id, rng)
        ids, mask, labels = queue.pop()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                         labels=labels.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seen += len(ids)
        losses.append(float(loss.detach()))
        bar.update(1)
        if step == 10 and config.time_budget_min:
            per_step = (time.perf_counter() - train_started) / step
            planned = max(step + 1, min(planned, int(config.time_budget_min * 60 / per_step)))
            bar.total = planned
            log.info("%.1f s/step: planning %d steps within %.1f min", per_step, planned,
                     config.time_budget_min)
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        if config.eval_every and step % config.eval_every == 0:
            evals.append((step, round(eval_loss(model, held_batches, device), 4)))
        elapsed = time.perf_counter() - train_started
        if config.time_budget_min and elapsed > config.time_budget_min * 60:
            log.info("time budget of %.1f min spent after %d steps", config.time_budget_min, step)
            break
    bar.close()
    train_seconds = time.perf_counter() - train_started
    loss_after = eval_loss(model, held_batches, device)

    # 4. save
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
    if config.full:
        tokenizer.save_pretrained(out)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    metrics: dict[str, Any] = {
        "examples": len(examples), "train_examples": len(train_ex), "eval_examples": len(held_ex),
        "eval_examples_scored": len(scored),
        **counts, "steps": step, "examples_seen": seen, "epochs": round(seen / len(train_ex), 2),
        "eval_loss_before": round(loss_before, 4), "eval_loss_after": round(loss_after, 4),
        "eval_perplexity_before": round(math.exp(loss_before), 2),
        "eval_perplexity_after": round(math.exp(loss_after), 2),
        "train_loss_first20": round(sum(losses[:20]) / max(1, len(losses[:20])), 4),
        "train_loss_last20": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
        "eval_curve": evals, "train_seconds": round(train_seconds, 1),
        "examples_per_s": round(seen / train_seconds, 3) if train_seconds else 0.0,
        "total_seconds": round(time.perf_counter() - started, 1), "device": device,
        "dtype": str(dtype).removeprefix("torch.") + (" weights, bfloat16 autocast" if autocast
                                                      else ""),
        "threads": settings.resolved_threads,
        "trainable_parameters": trainable, "saved_bytes": size, "base_model": str(base),
    }
    resolved = {**dataclasses.asdict(config), "base_model": str(base), "device": device,
                "embedding_model": getattr(retriever.embedder, "model_name", "")}
    (out / "finetune_config.json").write_text(json.dumps(resolved, indent=1, default=str) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (out / "TRAINING.md").write_text(training_md(config, metrics, counts))
    return metrics


def training_md(config: FinetuneConfig, metrics: dict[str, Any], counts: dict[str, int]) -> str:
    command = "chatbot.training.generator.finetune_generator(...)"
    if sys.argv[1:3] == ["finetune", "generator"]:
        command = " ".join(["chatbot", "finetune", "generator", *sys.argv[3:]])
    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items() if k != "eval_curve")
    return f"""# How this adapter was trained

Written by `chatbot finetune generator` at the end of the run (do not edit by hand).

## Command

```
{command}
```

## Data

Supervised examples built by `chatbot.training.data.build_examples` from the knowledge base
({', '.join(f'{k}: {v}' for k, v in counts.items())}); Bitext training split:
{config.bitext or 'not used'}. Held-out split: {config.eval_fraction:.0%} of dialogues/FAQs by
stable hash. Sources for each example are retrieved from other records; the loss covers the
answer tokens only.

## Settings

`{json.dumps(dataclasses.asdict(config), default=str)}`

## Metrics

| metric | value |
|---|---|
{rows}
"""
