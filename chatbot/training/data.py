"""Training data for fine-tuning the generator: supervised examples and token batches.

- ``build_examples``: for each historical dialogue turn, the sources retrieved from OTHER
  records (never the turn's own dialogue), the conversation so far and the customer's question;
  the target is the agent's reply, cut before its first sentence the support gate would reject
  (the gate the server applies, so the model learns to say only what the sources support). For
  each FAQ phrasing, the retrieved sources and the phrasing; the target is the FAQ answer citing
  its source as [n], or the honest fallback when retrieval missed it. Extra pairs (Bitext) are
  treated like FAQs whose own row is excluded from the sources. Dialogue text is redacted
  first (card numbers, emails, phone numbers, ``CHATBOT_REDACT_PATTERNS``; always, whatever
  ``CHATBOT_STORE_VERBATIM`` says), so no past customer's details are trained into the model.
- ``encode``/``batches``: the prompt the server sends (``chatbot.answering.prompt``), with the
  loss on the answer tokens only, in length-sorted right-padded batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from chatbot.answering import prompt
from chatbot.answering.privacy import Redactor
from chatbot.config import Settings
from chatbot.generation.local import render
from chatbot.types import Document, Hit


@dataclass(frozen=True)
class Example:
    messages: list[dict[str, str]]
    target: str
    group: str  # dialogue or FAQ id: the held-out split never separates a group
    kind: str


# --- data -------------------------------------------------------------------------------------


def _dialogue_id(document: Document) -> str:
    return document.record_id.split("#", 1)[0]


def _redacted(document: Document, redactor: Redactor) -> Document:
    """A past dialogue turn with its customer's turn, the agent's reply and the earlier turns
    redacted: a model trained on a card number, an email or a phone number can repeat it to
    anyone (the dialogue sources in the prompt are redacted by ``prompt.format_source``)."""
    return dataclasses.replace(
        document, question=redactor.redact(document.question),
        answer=redactor.redact(document.answer),
        context=tuple(dataclasses.replace(t, text=redactor.redact(t.text))
                      for t in document.context))


def _supported_prefix(answer: str, sources: Sequence[Hit], threshold: float, question: str) -> str:
    from chatbot.answering.grounding import SentenceGate

    gate = SentenceGate(sources, threshold, question)
    gate.feed(answer + " ")
    gate.finish()
    return gate.text if gate.claims else ""


def _with_citation(answer: str, sources: Sequence[Hit], record_id: str | None = None) -> str:
    """Append [n] for the source with ``record_id``, or else for the source sharing the most
    content words with the answer (what an agent would have looked up)."""
    from chatbot.retrieval.text import content_words

    if record_id is not None:
        position = next((i for i, h in enumerate(sources, 1)
                         if h.document.record_id == record_id), 0)
    else:
        words = set(content_words(answer))
        overlap = [len(words & set(content_words(h.document.answer))) for h in sources]
        position = 1 + overlap.index(max(overlap)) if overlap and max(overlap) > 0 else 0
    return f"{answer} [{position}]" if position else answer


def build_examples(documents: Sequence[Document], retriever: Any, settings: Settings,
                   extra_pairs: Sequence[tuple[str, str]] = (), progress: bool = True,
                   ) -> tuple[list[Example], dict[str, int]]:
    """Supervised examples (see the module docstring) and counts of what was kept or skipped."""
    from chatbot.answering.policy import Thresholds

    support = Thresholds.from_manifest(getattr(retriever, "manifest", None)).support
    redactor = Redactor.from_settings(settings, verbatim=False)
    k = prompt.MAX_SOURCES
    counts: dict[str, int] = defaultdict(int)
    examples: list[Example] = []
    for doc in tqdm(documents, desc="building examples", disable=not progress, leave=False):
        if doc.kind == "dialogue":
            doc = _redacted(doc, redactor)
            group = _dialogue_id(doc)
            pool = retriever.search(doc.question, doc.context, k=k + 12)
            sources = [h for h in pool if not h.document.record_id.startswith(group + "#")][:k]
            target = _supported_prefix(doc.answer, sources, support, doc.question)
            if not target:
                counts["dialogue_turns_unsupported"] += 1
                continue
            counts["dialogue_examples"] += 1
            examples.append(Example(prompt.build_messages(doc.question, sources, doc.context),
                                    _with_citation(target, sources), group, "dialogue"))
            continue
        for phrasing in doc.phrasings[:3]:  # question + two alternatives: enough variety
            sources = retriever.search(phrasing, k=k)[:k]
            found = any(h.document.record_id == doc.record_id for h in sources)
            target = (_with_citation(doc.answer, sources, doc.record_id) if found
                      else prompt.FALLBACK_TEXT)
            counts["faq_examples" if found else "faq_fallback_examples"] += 1
            examples.append(Example(prompt.build_messages(phrasing, sources), target,
                                    doc.record_id, "faq"))
    for i, (question, answer) in enumerate(extra_pairs):
        pool = retriever.search(question, k=k + 1)
        sources = [h for h in pool if h.document.question != question][:k]
        examples.append(Example(prompt.build_messages(question, sources), answer,
                                f"extra-{i}", "extra"))
        counts["extra_examples"] += 1
    return examples, dict(counts)


def split_examples(examples: Sequence[Example],
                   fraction: float) -> tuple[list[Example], list[Example]]:
    """Held-out split by group (a stable hash), so no dialogue or FAQ is on both sides."""
    train: list[Example] = []
    held: list[Example] = []
    for ex in examples:
        bucket = int(hashlib.sha256(ex.group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if bucket < fraction else train).append(ex)
    return train, held


# --- tokenisation and batches ------------------------------------------------------------


def encode(example: Example, tokenizer: Any, max_length: int,
           max_target_tokens: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) with labels -100 on the prompt: the loss covers the answer only."""
    prompt_ids = tokenizer(render(tokenizer, example.messages),
                           add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(example.target, add_special_tokens=False)["input_ids"]
    target_ids = target_ids[: max_target_tokens] + [tokenizer.eos_token_id]
    room = max(8, max_length - len(target_ids))
    prompt_ids = prompt_ids[-room:]
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def batches(encoded: Sequence[tuple[list[int], list[int]]], batch_size: int, pad_id: int,
            rng: random.Random) -> list[tuple[Any, Any, Any]]:
    """Shuffled batches of similar lengths (less padding on CPU), right-padded tensors."""
    import torch

    order = list(range(len(encoded)))
    rng.shuffle(order)
    chunks = [sorted(order[i:i + batch_size * 16], key=lambda j: len(encoded[j][0]))
              for i in range(0, len(order), batch_size * 16)]
    groups = [c[i:i + batch_size] for c in chunks for i in range(0, len(c), batch_size)]
    rng.shuffle(groups)
    out = []
    for group in groups:
        width = max(len(encoded[j][0]) for j in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        labels = torch.full((len(group), width), -100, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, j in enumerate(group):
            x, y = encoded[j]
            ids[row, : len(x)] = torch.tensor(x)
            labels[row, : len(y)] = torch.tensor(y)
            mask[row, : len(x)] = 1
        out.append((ids, mask, labels))
    return out
