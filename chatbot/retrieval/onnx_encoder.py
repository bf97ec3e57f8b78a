"""ONNX embedder: the one-time export of a sentence-transformers model to ONNX, and the encoder
that runs the export with ONNX Runtime.

The export is made from the model's own weights, offline, into
``<var_dir>/models/<name>-onnx/`` (``model.onnx``, the tokenizer files and ``encoder.json``).
It is written to a temporary folder and renamed into place, so a crash never leaves a
half-written model, and reused while ``encoder.json`` names the same source fingerprint (a
hash of the source model's files). Before it is published the export is checked against the
PyTorch model on a few probe sentences (cosine >= 0.9999), so a bad trace never serves.

At run time ``OnnxEncoder`` tokenizes with the model's tokenizer (same padding and truncation
as sentence-transformers), runs the transformer, and pools (mean, CLS or max, as the model's
pooling config says) and L2-normalises in numpy: the vectors match sentence-transformers'.
``model.int8.onnx`` (dynamic int8 quantisation, per channel) is derived lazily from
``model.onnx`` for the opt-in ``onnx-int8`` backend; its vectors differ slightly.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chatbot.errors import ModelError

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the export layout or the exported graph changes
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
META_FILE = "encoder.json"
POOLINGS = ("mean", "cls", "max")
OPSET = 17
MIN_EXPORT_COSINE = 0.9999
# Sentences of different lengths, so the check covers padding inside a batch.
PROBES = (
    "where is my order",
    "How do I return an item I bought last week but lost the receipt?",
    "hi",
    "Can I pay with PayPal or a gift card when ordering from Canada?",
)
# Files a model repository may carry that the PyTorch model never reads (other formats, docs):
# they neither enter the fingerprint nor are downloaded for an export.
IGNORED = ("*.md", "onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot",
           "tf_model*", "flax_model*", "rust_model*", ".gitattributes")

HOW_TO_FIX = (
    "delete the folder to re-export it, or set CHATBOT_EMBEDDING_BACKEND=torch to run the "
    "model in PyTorch"
)


def export_dir(models_dir: Path, model_name: str) -> Path:
    """Where the export of ``model_name`` lives: ``<models_dir>/<name>-onnx``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name.rstrip("/").rsplit("/", 1)[-1]) or "model"
    if "/" in model_name:  # a path or a hub id: two sources may share the last component
        base += "-" + hashlib.sha256(model_name.encode()).hexdigest()[:8]
    return models_dir / f"{base}-onnx"


def resolve_source(location: str) -> Path:
    """The local folder of the model: ``location`` itself, or its Hugging Face snapshot (which
    honours HF_HUB_OFFLINE, so nothing is downloaded offline)."""
    if Path(location).is_dir():
        return Path(location)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(location, ignore_patterns=list(IGNORED)))
    except Exception as error:  # hub errors vary: offline, not found, auth
        raise ModelError(
            f"cannot find embedding model '{location}' for the ONNX export: {error}. Use a "
            "local folder or a model id available offline."
        ) from error


def source_fingerprint(folder: Path) -> str:
    """sha256 over the model's files (relative path and content): changes when the weights,
    config or tokenizer change, not when the folder moves."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        relative = path.relative_to(folder).as_posix()
        if any(fnmatch.fnmatch(relative, pattern) for pattern in IGNORED):
            continue
        digest.update(relative.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _matches(folder: Path, fingerprint: str) -> bool:
    meta = _read_meta(folder)
    return (
        meta is not None
        and meta.get("format") == FORMAT
        and meta.get("source_fingerprint") == fingerprint
        and (folder / MODEL_FILE).is_file()
    )


# fingerprint -> an export made or checked by this process: another var dir (tests, benchmark
# runs in temporary folders) gets a copy of it instead of a new trace.
_KNOWN_EXPORTS: dict[str, Path] = {}


def ensure_export(location: str, target: Path) -> Path:
    """Export ``location`` to ``target`` unless an export of the same source is already there."""
    source = resolve_source(location)
    fingerprint = source_fingerprint(source)
    if _matches(target, fingerprint):
        _KNOWN_EXPORTS[fingerprint] = target
        return target
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        known = _KNOWN_EXPORTS.get(fingerprint)
        if known is not None and _matches(known, fingerprint):
            for path in known.iterdir():
                if path.is_file() and not path.name.startswith("."):
                    _link_or_copy(path, tmp / path.name)
        else:
            log.info("exporting embedder %s to ONNX in %s (once; a few seconds)", location, target)
            _export(source, tmp, fingerprint)
        _publish(tmp, target, fingerprint)
    except OSError as error:
        raise ModelError(f"cannot write the ONNX export to {target}: {error}. Make "
                         "CHATBOT_VAR_DIR writable, or set CHATBOT_EMBEDDING_BACKEND=torch"
                         ) from error
    finally:
        if tmp is not None:  # gone already when it was renamed into place
            shutil.rmtree(tmp, ignore_errors=True)
    _KNOWN_EXPORTS[fingerprint] = target
    return target


def _link_or_copy(source: Path, destination: Path) -> None:
    # Export files are never modified in place (new files are renamed in), so a hard link
    # is as safe as a copy, and instant.
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _publish(tmp: Path, target: Path, fingerprint: str) -> None:
    """Rename the finished export into place; a stale export is moved aside, then deleted."""
    if _matches(target, fingerprint):  # another process published the same export meanwhile
        return
    old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        if not _matches(target, fingerprint):  # lost a race to an export of another source
            raise
    shutil.rmtree(old, ignore_errors=True)


def _export(source: Path, folder: Path, fingerprint: str) -> None:
    """Trace the model's transformer to ``folder/model.onnx`` and check it against PyTorch."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        model: Any = SentenceTransformer(str(source), device="cpu")
    except Exception as error:  # library errors vary: OSError, ValueError, ...
        raise ModelError(f"cannot load embedding model '{source}' to export it: {error}") from error
    modules = [type(m).__name__ for m in model]
    if modules[:2] != ["Transformer", "Pooling"] or set(modules[2:]) - {"Normalize"}:
        raise ModelError(
            f"the ONNX backend supports Transformer + Pooling (+ Normalize) models; {source} "
            f"has {modules}: set CHATBOT_EMBEDDING_BACKEND=torch"
        )
    pooling_module = model[1]
    pooling = getattr(pooling_module, "pooling_mode", None) or pooling_module.get_pooling_mode_str()
    if pooling not in POOLINGS:
        raise ModelError(f"the ONNX backend pools with {POOLINGS}; {source} uses '{pooling}': "
                         "set CHATBOT_EMBEDDING_BACKEND=torch")
    transformer = model[0].auto_model.eval()

    class Wrapped(torch.nn.Module):
        """Passes the inputs by keyword: positional order differs between architectures."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # A padded example: with an all-ones mask the library may drop the mask from the trace.
    example = model.tokenizer(list(PROBES[:2]), padding=True, return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "token_embeddings": {0: "batch", 1: "tokens"}}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter, checked below
            torch.onnx.export(
                Wrapped().eval(), (), str(folder / MODEL_FILE),
                kwargs={"input_ids": example["input_ids"],
                        "attention_mask": example["attention_mask"]},
                input_names=["input_ids", "attention_mask"], output_names=["token_embeddings"],
                dynamic_axes=axes, opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter: no onnxscript needed, traces BERTs fine
            )
        model.tokenizer.save_pretrained(str(folder))
    except Exception as error:
        raise ModelError(f"ONNX export of '{source}' failed: {error}. Set "
                         "CHATBOT_EMBEDDING_BACKEND=torch to run the model in PyTorch") from error
    meta = {
        "format": FORMAT,
        "source": str(source),
        "source_fingerprint": fingerprint,
        "pooling": pooling,
        "max_seq_length": int(model.max_seq_length),
        "do_lower_case": bool(getattr(model[0], "do_lower_case", False)),
        "dimension": model_dimension(model),
        "opset": OPSET,
        "torch": torch.__version__,
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    expected = model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True)
    got = OnnxEncoder(folder, threads=1).encode(PROBES, batch_size=len(PROBES))
    cosine = float(np.min(np.sum(expected * got, axis=1)))
    if cosine < MIN_EXPORT_COSINE:
        raise ModelError(f"the ONNX export of '{source}' disagrees with PyTorch (cosine "
                         f"{cosine:.5f}): set CHATBOT_EMBEDDING_BACKEND=torch")


def model_dimension(model: Any) -> int:
    """A sentence-transformers model's vector size (the library renamed the method: both
    spellings are supported)."""
    get_dim = getattr(model, "get_embedding_dimension", None)
    return int((get_dim or model.get_sentence_embedding_dimension)())


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING


def cpu_session(ort: Any, path: Path, threads: int) -> Any:
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads, all graph
    optimisations, and idle pool threads that sleep (they spin by default: CPU burnt for nothing
    on a shared box). The embedder and the reranker both run this way."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ensure_int8(folder: Path) -> Path:
    """``model.int8.onnx`` next to ``model.onnx``: dynamic int8 weights, quantised per channel
    (per tensor moved MiniLM's vectors to cosine 0.96 of the original, per channel 0.99)."""
    path = folder / INT8_FILE
    if path.is_file():
        return path
    tmp = folder / f".tmp-{uuid.uuid4().hex[:8]}-{INT8_FILE}"
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quiet = _DropRecords()  # the quantiser logs a pre-processing tip on the root logger
        logging.getLogger().addFilter(quiet)
        try:
            quantize_dynamic(str(folder / MODEL_FILE), str(tmp), weight_type=QuantType.QInt8,
                             per_channel=True)
        finally:
            logging.getLogger().removeFilter(quiet)
        os.replace(tmp, path)  # atomic: readers see no file or the whole file
    except Exception as error:
        raise ModelError(f"int8 quantisation of {folder / MODEL_FILE} failed: {error}; "
                         f"{HOW_TO_FIX}") from error
    finally:
        tmp.unlink(missing_ok=True)
    return path


class OnnxEncoder:
    """Runs an export made by ``ensure_export``: texts in, unit float32 vectors out."""

    def __init__(self, folder: Path, *, threads: int, quantized: bool = False) -> None:
        meta = _read_meta(folder)
        if meta is None:
            raise ModelError(f"{folder / META_FILE} is missing or unreadable: {HOW_TO_FIX}")
        self.folder = folder
        self.pooling: str = meta["pooling"]
        self.max_seq_length: int = meta["max_seq_length"]
        self.lower: bool = meta["do_lower_case"]
        self.dimension: int = meta["dimension"]
        path = ensure_int8(folder) if quantized else folder / MODEL_FILE
        self._tokenizer_lock = threading.Lock()
        try:
            import onnxruntime as ort
            from transformers import AutoTokenizer

            self._session = cpu_session(ort, path, threads)
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph classes
            raise ModelError(f"cannot load the ONNX embedder {path}: {error}; {HOW_TO_FIX}"
                             ) from error

    def encode(
        self, texts: Sequence[str], *, batch_size: int, progress: bool = False
    ) -> np.ndarray:
        """(n, d) float32 unit vectors; long inputs are cut to the model's max_seq_length."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Longest first, like sentence-transformers: batches of similar length pad little.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts: Iterable[int] = range(0, len(order), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="embed", leave=False)
        for start in starts:
            rows = order[start : start + batch_size]
            out[rows] = self._encode_batch([texts[i] for i in rows])
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        if self.lower:
            texts = [t.lower() for t in texts]
        # A fast tokenizer reconfigures its Rust object on every call: concurrent calls fail
        # with "Already borrowed", so they take turns (a tenth of a millisecond each).
        with self._tokenizer_lock:
            tokens = self._tokenizer(texts, padding=True, truncation="longest_first",
                                     max_length=self.max_seq_length, return_tensors="np")
        mask = tokens["attention_mask"].astype(np.int64)
        feeds = {"input_ids": tokens["input_ids"].astype(np.int64), "attention_mask": mask}
        try:
            hidden = self._session.run(None, feeds)[0]
        except Exception as error:
            raise ModelError(f"the ONNX embedder in {self.folder} failed: {error}; {HOW_TO_FIX}"
                             ) from error
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = np.where(mask[..., None] > 0, hidden, -np.inf).max(axis=1)
        else:
            weights = mask.astype(np.float32)
            pooled = np.einsum("btd,bt->bd", hidden, weights)
            pooled /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
