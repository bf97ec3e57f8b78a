"""The cross-encoder on ONNX Runtime: a one-time export of compact cross-encoder weights
(``chatbot.retrieval.rerank``) and a scorer with ``CrossScorer``'s interface that runs it.

The export is traced from the PyTorch model the weights build, offline, into
``<var_dir>/models/cross-encoder-<weights id>/`` (``model.onnx``, the tokenizer files and
``cross_encoder_onnx.json``), written to a temporary folder and renamed into place, and checked
against PyTorch on probe pairs first (largest logit difference <= ``MAX_LOGIT_DIFF``), so a bad
trace never serves. ``model.int8.onnx`` (dynamic int8 weights, per channel) is derived from it
for ``reranker_backend=onnx-int8`` (``onnx_encoder.ensure_int8``); its scores differ slightly,
so thresholds are calibrated per backend (the scorer id names it).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chatbot.errors import ModelError
from chatbot.retrieval.onnx_encoder import (
    INT8_FILE,
    MODEL_FILE,
    OPSET,
    cpu_session,
    ensure_int8,
)

log = logging.getLogger(__name__)

META_FILE = "cross_encoder_onnx.json"
MAX_LOGIT_DIFF = 1e-3
PROBES = (
    ("can i pay with bitcoin", "Which payment methods do you accept? We accept Visa and PayPal."),
    ("where is my order | earlier: hi", "How can I check the status of my order? Sign in."),
    ("hi", "Do you ship to Canada? Yes, in 4-8 business days for C$12.95."),
)
HOW_TO_FIX = "set CHATBOT_RERANKER_BACKEND=torch to run the reranker in PyTorch"


def export_dir(models_dir: Path, weights_id: str) -> Path:
    return models_dir / f"cross-encoder-{weights_id}"


def ensure_export(model: Any, tokenizer: Any, target: Path, weights_id: str) -> Path:
    """Export the (loaded, eval-mode) PyTorch cross-encoder to ``target`` unless an export of the
    same weights is already there."""
    if _matches(target, weights_id):
        return target
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        log.info("exporting the reranker to ONNX in %s (once; seconds)", target)
        _export(model, tokenizer, tmp, weights_id)
        if not _matches(target, weights_id):  # else another process published it meanwhile
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    except OSError as error:
        raise ModelError(f"cannot write the ONNX reranker to {target}: {error}. Make "
                         f"CHATBOT_VAR_DIR writable, or {HOW_TO_FIX}") from error
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_exported(folder: Path, weights_id: str) -> bool:
    """Whether ``folder`` holds a checked export of these weights."""
    return _matches(folder, weights_id)


def _matches(folder: Path, weights_id: str) -> bool:
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("weights_id") == weights_id and (folder / MODEL_FILE).is_file())


def _export(model: Any, tokenizer: Any, folder: Path, weights_id: str) -> None:
    import torch

    class Wrapped(torch.nn.Module):
        """Inputs by keyword (positional order differs between architectures); one logit."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits[:, 0]

    # Padded probes: with an all-ones mask the tracer may drop the mask from the graph.
    example = tokenizer([p[0] for p in PROBES], [p[1] for p in PROBES], padding=True,
                        return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    axes["logits"] = {0: "batch"}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter; the result is checked below
            torch.onnx.export(Wrapped().eval(), (), str(folder / MODEL_FILE),
                              kwargs={n: example[n] for n in names}, input_names=names,
                              output_names=["logits"], dynamic_axes=axes, opset_version=OPSET,
                              dynamo=False)
        tokenizer.save_pretrained(str(folder))
    except Exception as error:  # the exporter raises many kinds
        raise ModelError(f"ONNX export of the reranker failed: {error}; {HOW_TO_FIX}") from error
    meta = {"weights_id": weights_id, "max_length": int(tokenizer.model_max_length),
            "opset": OPSET, "torch": torch.__version__}
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    with torch.no_grad():
        expected = Wrapped().eval()(**{n: example[n] for n in names}).numpy()
    got = OnnxCrossScorer(folder, threads=1).logits(PROBES)
    diff = float(np.max(np.abs(expected - got)))
    if diff > MAX_LOGIT_DIFF:
        raise ModelError(f"the ONNX reranker disagrees with PyTorch (logit difference "
                         f"{diff:.4f}); {HOW_TO_FIX}")


class OnnxCrossScorer:
    """``CrossScorer``'s interface (``logits``, ``predict``) over an export."""

    def __init__(self, folder: Path, *, threads: int, quantized: bool = False,
                 batch_size: int = 32) -> None:
        try:
            meta = json.loads((folder / META_FILE).read_text())
        except (OSError, ValueError) as error:
            raise ModelError(f"{folder / META_FILE} is missing or unreadable; {HOW_TO_FIX}"
                             ) from error
        self.max_length = int(meta.get("max_length") or 192)
        self.batch_size = batch_size
        path = ensure_int8(folder) if quantized else folder / MODEL_FILE
        self._lock = threading.Lock()  # the tokenizer is not safe to share between threads
        try:
            import onnxruntime as ort
            from transformers import AutoTokenizer

            self._session = cpu_session(ort, path, threads)
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except Exception as error:  # onnxruntime raises its own classes
            raise ModelError(f"cannot load the ONNX reranker {path}: {error}; {HOW_TO_FIX}"
                             ) from error
        self.quantized = quantized and path.name == INT8_FILE

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        out: list[np.ndarray] = []
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start:start + self.batch_size]
            with self._lock:
                features = self.tokenizer([p[0] for p in batch], [p[1] for p in batch],
                                          padding=True, truncation="longest_first",
                                          max_length=self.max_length, return_tensors="np")
            feeds = {name: features[name].astype(np.int64)
                     for name in ("input_ids", "attention_mask", "token_type_ids")}
            out.append(np.asarray(self._session.run(["logits"], feeds)[0], dtype=np.float32))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-self.logits(pairs)))).astype(np.float32)
