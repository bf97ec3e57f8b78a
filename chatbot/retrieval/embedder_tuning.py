"""The embedder's tuning: the shipped MiniLM's upper layers, trained on a knowledge base's FAQ
phrasings, stored compactly and applied offline.

Dense routing compares a customer's message with every FAQ phrasing; the shipped
all-MiniLM-L6-v2 places customers' own words ("my tent never showed up") far enough from the
FAQ's ("Where is my order?") that the answer threshold has to sit high. ``chatbot finetune
embedder --tuning`` (``chatbot.training.embedder``) pulls phrasings of the same FAQ together and
pushes off-topic questions away, training only the top layers (``train_layers``); this module
saves those tensors in fp16 (``save_tuning``: ``embedder_tuning.safetensors`` and
``embedder_tuning.json``, a few MB) and turns a tuning folder into a model folder the encoders
load (``tuned_location``): the shipped body with the tensors over it, written once under
``<models_dir>`` and renamed into place, reused while its weights id matches.

``CHATBOT_EMBEDDER_TUNING``: ``shipped`` (the demo knowledge base's tuning in
``chatbot/retrieval/embedder_tuning``; it fits the shipped MiniLM only, so with another
``CHATBOT_EMBEDDING_MODEL`` it is not applied), ``off``, or a folder. A tuned model has its own
name (``<model>+tuned-<weights id>``), hence its own index vectors and ONNX export.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from chatbot.config import Settings
from chatbot.errors import ConfigError, ModelError
from chatbot.retrieval.weights import WeightsKind

CONFIG_FILE = "embedder_tuning.json"
WEIGHTS_FILE = "embedder_tuning.safetensors"
FORMAT = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "embedder_tuning"
WEIGHTS = WeightsKind("CHATBOT_EMBEDDER_TUNING", SHIPPED_DIR, CONFIG_FILE, FORMAT,
                      "embedder tuning", "chatbot finetune embedder --tuning")
SHIPPED_BASE = "shipped all-MiniLM-L6-v2"
MARKER = "tuning.json"  # in a materialised model folder: which weights it holds


def active_tuning(settings: Settings) -> Path | None:
    """The tuning folder the settings ask for, or None: ``off``, or ``shipped`` with an
    embedding model other than the shipped one (the shipped tuning fits that model only). A
    folder trained on another body than ``embedding_model`` is a ConfigError."""
    value = settings.embedder_tuning.strip()
    if value.lower() == "off" or (value.lower() == "shipped" and settings.embedding_model):
        return None
    folder = WEIGHTS.resolve(value)
    if folder is None:
        return None
    base = str(WEIGHTS.read_config(folder).get("base_path") or "")
    if base != settings.embedding_model:
        raise ConfigError(
            f"CHATBOT_EMBEDDER_TUNING={value} was trained on "
            f"{base or SHIPPED_BASE}, but CHATBOT_EMBEDDING_MODEL is "
            f"{settings.embedding_model or 'the shipped all-MiniLM-L6-v2'}: set one to match, "
            "or CHATBOT_EMBEDDER_TUNING=off")
    return folder


def tuning_id(folder: Path) -> str:
    """A short hash of the tuning's weights: part of the tuned model's name."""
    path = folder / WEIGHTS_FILE
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    # Every Embedder names its model; hashing 10 MB each time would cost ~20 ms a construction.
    del mtime_ns, size  # part of the cache key: a rewritten file is hashed again
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def tuned_name(settings: Settings, base_name: str) -> str:
    """``base_name`` with the active tuning's id appended (unchanged when none is active)."""
    folder = active_tuning(settings)
    return base_name if folder is None else f"{base_name}+tuned-{tuning_id(folder)}"


def freeze_below(model: Any, train_layers: int) -> None:
    """Leave ``requires_grad`` on the top ``train_layers`` transformer layers of a
    sentence-transformers model only (what ``save_tuning`` writes)."""
    body = model[0].auto_model
    layers = int(body.config.num_hidden_layers)
    if not 1 <= train_layers <= layers:
        raise ConfigError(f"--train-layers must be 1..{layers}, not {train_layers}")
    trained = tuple(f"encoder.layer.{i}." for i in range(layers - train_layers, layers))
    for name, parameter in body.named_parameters():
        parameter.requires_grad = name.startswith(trained)


def save_tuning(model: Any, out_dir: Path, *, base: str = "",
                meta: dict[str, Any] | None = None) -> Path:
    """Write the body's trainable tensors in fp16 and the JSON describing them; returns the
    weights file. ``base``: the body's folder when not the shipped MiniLM."""
    from safetensors.torch import save_file

    tensors = {name: p.detach().to("cpu").half().contiguous()
               for name, p in model[0].auto_model.named_parameters() if p.requires_grad}
    if not tensors:
        raise ConfigError("nothing to save: no layer of the embedder is trainable")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS_FILE))
    config = {"format": FORMAT, "base": base or SHIPPED_BASE, "base_path": base,
              "dtype": "float16", "tensors": sorted(tensors),
              "parameters": int(sum(t.numel() for t in tensors.values())), "meta": meta or {}}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    return out_dir / WEIGHTS_FILE


def _is_materialised(folder: Path, weights_id: str) -> bool:
    try:
        return bool(json.loads((folder / MARKER).read_text()).get("weights_id") == weights_id)
    except (OSError, ValueError):
        return False


def tuned_location(settings: Settings, base_location: str) -> str:
    """The model folder the encoders load: ``base_location`` itself when no tuning is active,
    else ``<models_dir>/embedder-tuned-<id>`` (written on first use: the body from
    ``base_location`` with the tuning's tensors over it)."""
    folder = active_tuning(settings)
    if folder is None:
        return base_location
    weights_id = tuning_id(folder)
    target = settings.models_dir / f"embedder-tuned-{weights_id}"
    if _is_materialised(target, weights_id):
        return str(target)
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(base_location, device="cpu")
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except Exception as error:  # the libraries raise several types for a bad folder or file
        raise ModelError(f"cannot apply the embedder tuning {folder}: {error}") from error
    body: Any = model[0].auto_model
    _, unexpected = body.load_state_dict({k: v.float() for k, v in tensors.items()},
                                         strict=False)
    if unexpected:
        raise ModelError(f"{folder}: tensors {unexpected[:3]} do not fit {base_location}")
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".embedder-tuned-", dir=settings.models_dir))
    try:
        model.save(str(tmp))
        (tmp / MARKER).write_text(json.dumps({"weights_id": weights_id,
                                              "tuning": str(folder)}) + "\n")
        if target.exists() and not _is_materialised(target, weights_id):
            shutil.rmtree(target)  # a stale or half-copied folder of the same name
        if not target.exists():
            tmp.rename(target)  # atomic: a crash never leaves a half-written model in place
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
