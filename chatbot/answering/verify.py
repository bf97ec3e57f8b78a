"""The grounding verifier: whether approved source texts entail a generated sentence.

The support gate (``chatbot.answering.grounding``) first checks a sentence lexically (cheap:
shared content words, citations, numbers); a sentence that passes is then compared with each
source by a small trained head on the shipped all-MiniLM-L6-v2 (the retriever's model, its
weights unchanged) and passes when the probability that some source entails it reaches
``verifier_threshold`` (by default the threshold calibrated with the weights).

The head (``AlignHead``) is a decomposable-attention entailment model (Parikh et al., 2016) over
MiniLM's contextual token vectors: every token of the sentence is softly aligned with the source's
tokens and the source's with the sentence's, each token is compared with what it aligned to, and
the comparisons are pooled into one logit. Four flags per token make explicit what a lexical
check misses: whether the very token occurs on the other side, whether it is a digit, whether it
is a negation cue, and whether it is a gap (missing from the other side although most of its
sentence is there: the "over $500" a claim dropped, the "not" it added). It is trained on our
own synthetic data (``chatbot finetune verifier``, ``chatbot.training.verifier``): faithful
rewrites of knowledge-base answers against perturbations of them (negation, numbers, prices,
durations, places, dropped conditions, a neighbouring FAQ's claim). It was chosen over a
fine-tuned cross-encoder because on this CPU the cross-encoder did not learn the task in the
training time available, and the head needs one MiniLM pass per sentence (sources' token
vectors are cached) instead of one per (sentence, source) pair.

The evidence is the sources' answers only (an FAQ's answer, a past agent's reply): never the
customer's question, nor an FAQ's question or a past customer's turn, which state no policy.
A long source is read in passages of whole sentences (``passages``), each judged on its own.
Weights ship in ``chatbot/answering/verifier/`` (the head, about 2.2 MB) and load offline, lazily.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatbot.config import Settings
from chatbot.errors import ModelError
from chatbot.retrieval.weights import WeightsKind

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parent / "verifier"
WEIGHTS_FILE = "verifier.safetensors"
CONFIG_FILE = "verifier.json"
FORMAT = 1
WEIGHTS = WeightsKind("CHATBOT_VERIFIER", SHIPPED_DIR, CONFIG_FILE, FORMAT, "verifier weights",
                      "chatbot finetune verifier")
DEFAULT_THRESHOLD = 0.5  # for weights saved without a calibrated threshold
MAX_TOKENS = 256  # wordpieces per text; passages are cut to fit
PASSAGE_WORDS = 140  # a longer source is read in passages of whole sentences up to this size
CACHE_SIZE = 4096  # source passages whose token vectors are kept (KB answers repeat)
FLAGS = 4  # per token: occurs on the other side, is a digit, is a negation cue, is a gap
NEGATION_CUES = ("not", "no", "never", "t", "cannot", "without", "none", "nothing", "nor",
                 "only", "unless", "except")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def passages(text: str, max_words: int = PASSAGE_WORDS) -> list[str]:
    """``text`` in passages of whole sentences of at most ``max_words`` words (a sentence
    longer than that is a passage of its own); one passage for a typical FAQ answer."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for piece in (p.strip() for p in _SENTENCE_END.split(text)):
        if not piece:
            continue
        words = len(piece.split())
        if current and size + words > max_words:
            out.append(" ".join(current))
            current, size = [], 0
        current.append(piece)
        size += words
    if current:
        out.append(" ".join(current))
    return out


# --- the model -----------------------------------------------------------------------------------


def new_head(dim: int = 384, hidden: int = 128, dropout: float = 0.1) -> Any:
    """An untrained ``AlignHead`` (torch is imported only when a verifier is used)."""
    import torch
    from torch import nn

    def mlp(width: int) -> nn.Module:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU(),
                             nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU())

    class AlignHead(nn.Module):
        """Attend (soft alignment), compare, aggregate: one logit per (sentence, passage)."""

        def __init__(self) -> None:
            super().__init__()
            width = dim + FLAGS
            self.attend = nn.Sequential(nn.Linear(width, hidden), nn.ReLU())
            self.compare_sentence = mlp(4 * width)
            self.compare_source = mlp(4 * width)
            self.aggregate = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * hidden, hidden),
                                           nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, a: torch.Tensor, a_mask: torch.Tensor, b: torch.Tensor,
                    b_mask: torch.Tensor) -> torch.Tensor:
            # a: sentence tokens (n, la, width), b: source tokens (n, lb, width); masks 1 = token
            scores = self.attend(a) @ self.attend(b).transpose(1, 2)  # (n, la, lb)
            big = torch.finfo(scores.dtype).min
            to_b = scores.masked_fill(b_mask[:, None, :] == 0, big).softmax(dim=2)
            to_a = scores.masked_fill(a_mask[:, :, None] == 0, big).softmax(dim=1)
            beta = to_b @ b  # what each sentence token aligned to in the source
            alpha = to_a.transpose(1, 2) @ a  # what each source token aligned to
            va = self.compare_sentence(torch.cat([a, beta, a - beta, a * beta], dim=2))
            vb = self.compare_source(torch.cat([b, alpha, b - alpha, b * alpha], dim=2))
            pooled = [_masked_mean(va, a_mask), _masked_max(va, a_mask),
                      _masked_mean(vb, b_mask), _masked_max(vb, b_mask)]
            return self.aggregate(torch.cat(pooled, dim=1))[:, 0]

    return AlignHead()


def _masked_mean(values: Any, mask: Any) -> Any:
    weights = mask[:, :, None].to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _masked_max(values: Any, mask: Any) -> Any:
    return values.masked_fill(mask[:, :, None] == 0, -1e4).max(dim=1).values


class TokenEncoder:
    """MiniLM's contextual vectors of each wordpiece of a text (no [CLS]/[SEP]), with the ids."""

    def __init__(self, location: str = "") -> None:
        import transformers
        from transformers import AutoModel, AutoTokenizer

        from chatbot.retrieval.embed import default_embedder_path

        self.location = location or str(default_embedder_path())
        transformers.utils.logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.location)
            self.model = AutoModel.from_pretrained(self.location).eval()
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot load the verifier's encoder {self.location}: {error}") \
                from error
        ids = self.tokenizer.convert_tokens_to_ids(list(NEGATION_CUES))
        self.negation_ids = frozenset(i for i in ids if i != self.tokenizer.unk_token_id)
        self.boundary_ids = frozenset(self.tokenizer.convert_tokens_to_ids([".", ";", "!", "?"]))
        vocabulary = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self.digit_ids = frozenset(i for i, t in enumerate(vocabulary)
                                   if any(c.isdigit() for c in t))

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> list[tuple[Any, Any]]:
        """(ids, vectors) of each text, in order; each text's own forward pass when
        ``batch_size`` is 1 (what serving does, so a text's vectors never depend on others)."""
        import torch

        out: list[tuple[Any, Any]] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[start:start + batch_size]), padding=True,
                                       truncation=True, max_length=MAX_TOKENS,
                                       return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                for row in range(hidden.shape[0]):
                    length = int(batch["attention_mask"][row].sum())
                    ids = batch["input_ids"][row, 1:length - 1]  # without [CLS] and [SEP]
                    out.append((ids.clone(), hidden[row, 1:length - 1].clone()))
        return out

    def features(self, side: tuple[Any, Any], other: tuple[Any, Any]) -> Any:
        """The head's input for one side: vectors plus the four flags against ``other``."""
        import torch

        ids, vectors = side
        tokens = ids.tolist()
        other_ids = set(other[0].tolist())
        matched = [t in other_ids for t in tokens]
        gaps = [False] * len(tokens)
        start = 0
        for end in range(len(tokens) + 1):  # sentences and clauses: up to . ; ! ?
            if end == len(tokens) or tokens[end] in self.boundary_ids:
                if end > start and sum(matched[start:end]) >= (end - start) / 2:
                    for k in range(start, end):
                        gaps[k] = not matched[k]
                start = end + 1
        flags = torch.tensor([[float(m), float(t in self.digit_ids),
                               float(t in self.negation_ids), float(g)]
                              for t, m, g in zip(tokens, matched, gaps, strict=True)],
                             dtype=vectors.dtype).reshape(len(tokens), FLAGS)
        return torch.cat([vectors, flags], dim=1)


def pad(rows: Sequence[Any]) -> tuple[Any, Any]:
    """(n, longest, width) zero-padded batch and its (n, longest) mask."""
    import torch

    longest = max(1, max(r.shape[0] for r in rows))
    width = rows[0].shape[1]
    batch = torch.zeros(len(rows), longest, width)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, :r.shape[0]] = r
        mask[i, :r.shape[0]] = 1
    return batch, mask


def pair_logits(head: Any, encoder: TokenEncoder,
                pairs: Sequence[tuple[tuple[Any, Any], tuple[Any, Any]]]) -> Any:
    """Logits of encoded (sentence, passage) pairs, in one batch."""
    a, a_mask = pad([encoder.features(sentence, source) for sentence, source in pairs])
    b, b_mask = pad([encoder.features(source, sentence) for sentence, source in pairs])
    return head(a, a_mask, b, b_mask)


# --- weights -------------------------------------------------------------------------------------


def save_head(head: Any, out_dir: Path, meta: dict[str, Any]) -> Path:
    """The head's tensors (fp32, about 2.2 MB) and a JSON with its sizes and ``meta``."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()},
              str(out_dir / WEIGHTS_FILE))
    config = {"format": FORMAT, "kind": "align-head", "encoder": "shipped all-MiniLM-L6-v2",
              "dim": 384, "hidden": int(head.aggregate[-1].in_features), "meta": meta}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    return out_dir / WEIGHTS_FILE


def read_config(weights_dir: Path) -> dict[str, Any]:
    """The verifier's JSON config in ``weights_dir`` (a clear error when it has none)."""
    return WEIGHTS.read_config(weights_dir)


def load_head(weights_dir: Path) -> Any:
    from safetensors.torch import load_file

    config = read_config(weights_dir)
    head = new_head(int(config["dim"]), int(config["hidden"]))
    try:
        head.load_state_dict(load_file(str(weights_dir / WEIGHTS_FILE)))
    except (OSError, RuntimeError, ValueError) as error:
        raise ModelError(f"cannot load {weights_dir / WEIGHTS_FILE}: {error}") from error
    return head.eval()


def resolve_weights_dir(setting: str) -> Path | None:
    """``verifier`` setting -> weights folder: 'off' -> None, 'shipped' -> the shipped folder,
    else a path holding weights written by ``chatbot finetune verifier``."""
    return WEIGHTS.resolve(setting)


# One encoder and head per weights folder, shared by every Verifier of the process (each
# pipeline built in a process would otherwise load its own), with the lock that serialises use.
_SHARED: dict[str, tuple[TokenEncoder, Any, threading.Lock]] = {}
_SHARED_LOCK = threading.Lock()


def _shared(weights_dir: Path) -> tuple[TokenEncoder, Any, threading.Lock]:
    key = str(weights_dir.resolve())
    with _SHARED_LOCK:
        if key not in _SHARED:
            head = load_head(weights_dir)
            _SHARED[key] = (TokenEncoder(), head, threading.Lock())
            log.info("grounding verifier loaded from %s", weights_dir)
        return _SHARED[key]


class Verifier:
    """Entailment of a sentence by source texts (see the module docstring). The constructor
    stores settings only; the models load on first use or ``load()``."""

    def __init__(self, weights_dir: Path, threshold: float, *, encoder: TokenEncoder | None = None,
                 head: Any = None) -> None:
        self.weights_dir = weights_dir
        self.threshold = threshold
        self._encoder = encoder
        self._head = head
        self._lock = threading.Lock()
        self._passages: OrderedDict[str, tuple[Any, Any]] = OrderedDict()  # LRU
        self.calls = 0  # sentences verified (for benchmarks and logs)

    @property
    def loaded(self) -> bool:
        return self._head is not None and self._encoder is not None

    def load(self) -> None:
        if not self.loaded:
            encoder, head, lock = _shared(self.weights_dir)
            self._lock = lock  # first: a thread that sees the models must see their lock
            self._encoder, self._head = encoder, head

    def _encoded_passages(self, texts: Sequence[str]) -> list[tuple[Any, Any]]:
        assert self._encoder is not None
        out = []
        for text in texts:
            if text in self._passages:
                self._passages.move_to_end(text)
            else:
                self._passages[text] = self._encoder.encode([text], batch_size=1)[0]
                if len(self._passages) > CACHE_SIZE:
                    self._passages.popitem(last=False)
            out.append(self._passages[text])
        return out

    def entailment(self, sentence: str, sources: Sequence[str]) -> float:
        """The highest probability that one passage of the sources entails ``sentence`` (0.0
        without sources). Each text is encoded on its own and each sentence scored in one batch
        of its passages, so a verdict never depends on what else was scored (streamed and whole
        answers agree exactly)."""
        import torch

        texts = [p for source in sources for p in passages(source)]
        if not texts or not sentence.strip():
            return 0.0
        self.load()
        assert self._encoder is not None
        with self._lock, torch.inference_mode():
            self.calls += 1
            encoded = self._encoder.encode([sentence], batch_size=1)[0]
            logits = pair_logits(self._head, self._encoder,
                                 [(encoded, p) for p in self._encoded_passages(texts)])
            return float(torch.sigmoid(logits).max())

    def supports(self, sentence: str, sources: Sequence[str]) -> bool:
        """Whether the sources entail ``sentence`` (probability >= the threshold)."""
        return self.entailment(sentence, sources) >= self.threshold


def make_verifier(settings: Settings) -> Verifier | None:
    """The verifier the settings ask for, unloaded; None when ``verifier`` is 'off'. Its
    threshold is ``verifier_threshold``, or else the one calibrated with the weights."""
    weights = resolve_weights_dir(settings.verifier)
    if weights is None:
        return None
    threshold = settings.verifier_threshold
    if threshold is None:
        threshold = float(read_config(weights).get("meta", {}).get("threshold",
                                                                   DEFAULT_THRESHOLD))
    return Verifier(weights, threshold)
