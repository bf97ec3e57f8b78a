"""Train the grounding verifier: `chatbot finetune verifier`.

1. Split the knowledge base by FAQ (``verifier_data.split_groups``): the held-out FAQs (the
   held-out perturbation set) never reach training; a share of the training groups
   (``val_fraction``) is kept apart to pick the decision threshold.
2. Build (source, sentence, label) pairs from the training FAQs and past dialogues
   (``verifier_data.build_pairs``): faithful rewrites against perturbations.
3. Encode every distinct text once with the shipped MiniLM (frozen: its contextual token
   vectors are the head's input, ``verify.TokenEncoder``), then train the alignment head
   (``verify.new_head``) with binary cross-entropy: no gradient goes through MiniLM, so an
   epoch of ~7,000 pairs takes about two minutes on this 2-core CPU.
4. Pick the threshold that best separates faithful from perturbed on the validation groups
   (balanced accuracy), save the head with the threshold (``verify.save_head``), and score the
   held-out FAQs' pairs with the saved verifier exactly as the gate will; load the result with
   ``CHATBOT_VERIFIER=<output>`` (or ship it in ``chatbot/answering/verifier``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from chatbot.config import Settings
from chatbot.errors import ConfigError
from chatbot.retrieval.text import content_words
from chatbot.training.verifier_data import (
    Pair,
    Vocabulary,
    build_pairs,
    counts,
    split_groups,
)
from chatbot.types import Document


def _in_validation(group: str, fraction: float) -> bool:
    digest = hashlib.sha256(f"validation:{group}".encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF < fraction


def best_passage(source: str, sentence: str) -> str:
    """The passage of ``source`` (``verify.passages``) sharing the most content words with
    ``sentence``: what the verifier will find its evidence in when serving."""
    from chatbot.answering.verify import passages

    pieces = passages(source)
    words = set(content_words(sentence))
    return max(pieces, key=lambda p: len(words & set(content_words(p))), default=source)


def length_batches(pairs: Sequence[Pair], batch_size: int,
                   rng: random.Random) -> list[list[Pair]]:
    """Shuffled batches of pairs of similar length (sorted within chunks of 50 batches)."""
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    chunk = batch_size * 50
    batches: list[list[Pair]] = []
    for start in range(0, len(shuffled), chunk):
        part = sorted(shuffled[start:start + chunk],
                      key=lambda p: len(p.source) + len(p.sentence))
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def pick_threshold(probabilities: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """(threshold, balanced accuracy): the cut between faithful (1) and perturbed (0) pairs
    with the best mean of both acceptance rates; ties go to the cut nearest 0.5."""
    positives = [p for p, y in zip(probabilities, labels, strict=True) if y]
    negatives = [p for p, y in zip(probabilities, labels, strict=True) if not y]
    if not positives or not negatives:
        return 0.5, 0.0
    best = (-1.0, 0.0, 0.5)
    for cut in sorted({round(p, 4) for p in probabilities} | {0.5}):
        accept = sum(p >= cut for p in positives) / len(positives)
        reject = sum(p < cut for p in negatives) / len(negatives)
        score = (accept + reject) / 2
        if (score, -abs(cut - 0.5)) > (best[0], -abs(best[2] - 0.5)):
            best = (score, accept, cut)
    return best[2], round(best[0], 4)


def rates(probabilities: Sequence[float], pairs: Sequence[Pair],
          threshold: float) -> dict[str, Any]:
    """Faithful accepted and perturbed rejected at ``threshold``, overall and by kind."""
    by_kind: dict[str, list[bool]] = {}
    for p, pair in zip(probabilities, pairs, strict=True):
        correct = (p >= threshold) if pair.label else (p < threshold)
        by_kind.setdefault(pair.kind, []).append(correct)
    pos = [(p >= threshold) for p, pair in zip(probabilities, pairs, strict=True) if pair.label]
    neg = [(p < threshold) for p, pair in zip(probabilities, pairs, strict=True) if not pair.label]
    return {
        "faithful_accepted": round(sum(pos) / len(pos), 4) if pos else None,
        "perturbed_rejected": round(sum(neg) / len(neg), 4) if neg else None,
        "by_kind": {k: {"n": len(v), "correct": round(sum(v) / len(v), 4)}
                    for k, v in sorted(by_kind.items())},
    }


def finetune_verifier(settings: Settings, *, output: Path, epochs: int = 8,
                      batch_size: int = 32, lr: float = 1e-3, hidden: int = 128,
                      heldout_fraction: float = 0.3, val_fraction: float = 0.1,
                      rounds: int = 2, condition_draws: int = 3, max_steps: int = 0,
                      documents: Sequence[Document] | None = None,
                      evaluate: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train, calibrate, save and evaluate the verifier (see the module docstring)."""
    import torch

    from chatbot.answering.verify import (
        TokenEncoder,
        Verifier,
        new_head,
        pair_logits,
        save_head,
    )
    from chatbot.knowledge.ingest import load_knowledge_base

    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.resolved_threads)
    rng = random.Random(settings.seed)
    if documents is None:
        documents = load_knowledge_base(settings.knowledge_base)
    train_docs, held_docs = split_groups(list(documents), heldout_fraction)
    # Replacement values come from the training documents only: nothing of a held-out FAQ.
    vocabulary = Vocabulary.from_texts([d.answer for d in train_docs])
    pairs = [dataclasses.replace(p, source=best_passage(p.source, p.sentence))
             for p in build_pairs(train_docs, vocabulary, settings.seed, rounds=rounds,
                                  condition_draws=condition_draws)]
    train = [p for p in pairs if not _in_validation(p.group, val_fraction)]
    validation = [p for p in pairs if _in_validation(p.group, val_fraction)]
    if len(train) < batch_size or not validation or len({p.label for p in train}) < 2:
        raise ConfigError(f"too few verifier pairs to train ({len(pairs)} from "
                          f"{len(train_docs)} documents): add FAQs or dialogues, or lower "
                          "--batch-size")
    started = time.perf_counter()
    encoder = TokenEncoder()
    texts = sorted({t for p in train for t in (p.source, p.sentence)}, key=len)
    encoded: dict[str, Any] = {}
    for start in tqdm(range(0, len(texts), 64), desc="encoding texts", disable=not progress):
        chunk = texts[start:start + 64]
        encoded.update(zip(chunk, encoder.encode(chunk, batch_size=64), strict=True))
    encode_seconds = time.perf_counter() - started

    head = new_head(hidden=hidden)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    per_epoch = (len(train) + batch_size - 1) // batch_size
    total = epochs * per_epoch if not max_steps else min(max_steps, epochs * per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: max(0.05, 1.0 - s / max(1, total)))
    steps = 0
    started = time.perf_counter()
    head.train()
    bar = tqdm(total=total, desc="verifier head", disable=not progress)
    while steps < total:
        order = list(train)
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            logits = pair_logits(head, encoder,
                                 [(encoded[p.sentence], encoded[p.source]) for p in batch])
            labels = torch.tensor([float(p.label) for p in batch])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if steps >= total:
                break
    bar.close()
    train_seconds = time.perf_counter() - started
    head.eval()
    verifier = Verifier(output, 0.5, encoder=encoder, head=head)
    val_probs = [verifier.entailment(p.sentence, [p.source]) for p in validation]
    threshold, balanced = pick_threshold(val_probs, [p.label for p in validation])
    metrics: dict[str, Any] = {
        "documents": len(documents), "train_documents": len(train_docs),
        "heldout_faqs": len(held_docs), "pairs": len(pairs), "train_pairs": len(train),
        "validation_pairs": len(validation), "train_kinds": counts(train),
        "threshold": threshold, "validation_balanced_accuracy": balanced,
        "validation": rates(val_probs, validation, threshold),
        "steps": steps, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "hidden": hidden, "rounds": rounds, "condition_draws": condition_draws,
        "encode_seconds": round(encode_seconds, 1),
        "train_seconds": round(train_seconds, 1), "threads": settings.resolved_threads,
        "output": str(output),
        "use_it": f"CHATBOT_VERIFIER={output} (threshold {threshold}, stored with the weights)",
    }
    # Saved before the held-out scoring: a long run is never lost to a later step.
    save_head(head, output, {"threshold": threshold, "heldout_fraction": heldout_fraction,
                             "seed": settings.seed, "validation": metrics["validation"]})
    (output / "finetune_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    if evaluate and held_docs:
        from chatbot.training.verifier_data import heldout_pairs

        held = heldout_pairs(list(documents), heldout_fraction, settings.seed)
        verifier.threshold = threshold
        held_probs = [verifier.entailment(p.sentence, [p.source]) for p in tqdm(
            held, desc="held-out pairs", disable=not progress)]
        metrics["heldout"] = rates(held_probs, held, threshold)
        (output / "finetune_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics
