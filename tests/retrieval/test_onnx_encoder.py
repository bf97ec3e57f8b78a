"""ONNX embedder: the export of the shipped MiniLM gives the PyTorch vectors, is made once and
published atomically, and its failures say what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from chatbot.config import Settings
from chatbot.errors import ModelError
from chatbot.retrieval.embed import DEFAULT_EMBEDDER_NAME, Embedder, TorchEncoder
from chatbot.retrieval.onnx_encoder import (
    META_FILE,
    MODEL_FILE,
    OnnxEncoder,
    _publish,
    ensure_export,
    export_dir,
)

TEXTS = [
    "where is my order",
    "Where's my package?? It was due on Monday!!",
    "hi",
    "Can I change the delivery address of an order that has already shipped to Canada?",
    "refund " * 400,  # longer than max_seq_length: truncated the same way by both backends
]


@pytest.fixture(scope="session")
def onnx_var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A var dir holding one export of the shipped MiniLM, shared by this module's tests."""
    var = tmp_path_factory.mktemp("onnx-var")
    Embedder(Settings(var_dir=var, torch_threads=1, _env_file=None)).encoder  # type: ignore[call-arg]  # noqa: B018
    return var


@pytest.fixture(scope="session")
def torch_encoder() -> TorchEncoder:
    from chatbot.retrieval.embed import default_embedder_path

    return TorchEncoder(str(default_embedder_path()), threads=1)


def _onnx_settings(var: Path, **update: object) -> Settings:
    return Settings(var_dir=var, torch_threads=1, _env_file=None, **update)  # type: ignore[call-arg]


def test_onnx_vectors_match_pytorch(onnx_var: Path, torch_encoder: TorchEncoder) -> None:
    onnx = Embedder(_onnx_settings(onnx_var))
    expected = torch_encoder.encode(TEXTS, batch_size=2)
    for got in (onnx.encode(TEXTS, batch_size=2), onnx.encode(TEXTS),
                np.stack([onnx.encode_query(t) for t in TEXTS])):
        assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
        assert np.min(np.sum(expected * got, axis=1)) >= 0.9999
    assert onnx.model_name == DEFAULT_EMBEDDER_NAME  # same vectors: the same index serves both


def test_export_is_made_once_and_reused(onnx_var: Path) -> None:
    folder = export_dir(onnx_var / "models", DEFAULT_EMBEDDER_NAME)
    assert folder.name == "all-MiniLM-L6-v2-onnx"
    assert {p.name for p in folder.iterdir()} >= {MODEL_FILE, META_FILE, "tokenizer.json"}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left
    before = (folder / MODEL_FILE).stat().st_mtime_ns
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["pooling"] == "mean" and meta["max_seq_length"] == 256
    from chatbot.retrieval.embed import default_embedder_path

    assert ensure_export(str(default_embedder_path()), folder) == folder
    assert (folder / MODEL_FILE).stat().st_mtime_ns == before


def test_another_var_dir_gets_a_copy_of_a_known_export(onnx_var: Path, tmp_path: Path) -> None:
    from chatbot.retrieval.embed import default_embedder_path

    known = export_dir(onnx_var / "models", DEFAULT_EMBEDDER_NAME)
    other = export_dir(tmp_path / "models", DEFAULT_EMBEDDER_NAME)
    assert ensure_export(str(default_embedder_path()), other) == other
    assert (other / MODEL_FILE).read_bytes() == (known / MODEL_FILE).read_bytes()
    assert json.loads((other / META_FILE).read_text()) == json.loads(
        (known / META_FILE).read_text())
    assert [p.name for p in other.parent.iterdir()] == [other.name]


def test_publish_replaces_a_stale_export_in_one_rename(tmp_path: Path) -> None:
    target = tmp_path / "m-onnx"
    target.mkdir()
    (target / META_FILE).write_text(json.dumps({"format": 1, "source_fingerprint": "old"}))
    fresh = tmp_path / ".tmp-m-onnx-1"
    fresh.mkdir()
    (fresh / MODEL_FILE).write_bytes(b"new")
    (fresh / META_FILE).write_text(json.dumps({"format": 1, "source_fingerprint": "new"}))
    _publish(fresh, target, "new")
    assert (target / MODEL_FILE).read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["m-onnx"]  # old copy and temp gone


def test_export_names_do_not_collide() -> None:
    models = Path("var/models")
    assert export_dir(models, "org-a/minilm") != export_dir(models, "org-b/minilm")
    assert export_dir(models, "/abs/path/to/model").name.startswith("model-")


def test_broken_export_raises_model_error_saying_what_to_do(
    onnx_var: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-onnx"
    shutil.copytree(export_dir(onnx_var / "models", DEFAULT_EMBEDDER_NAME), broken)
    (broken / MODEL_FILE).write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="CHATBOT_EMBEDDING_BACKEND=torch"):
        OnnxEncoder(broken, threads=1)
    (broken / META_FILE).unlink()
    with pytest.raises(ModelError, match="re-export"):
        OnnxEncoder(broken, threads=1)


def test_int8_is_opt_in_with_its_own_model_name(onnx_var: Path) -> None:
    fp32 = Embedder(_onnx_settings(onnx_var))
    int8 = Embedder(_onnx_settings(onnx_var, embedding_backend="onnx-int8"))
    # int8 vectors differ a little: an index built in fp32 must not be searched with them.
    assert int8.model_name != fp32.model_name
    a, b = fp32.encode(TEXTS[:4]), int8.encode(TEXTS[:4])
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(a * b, axis=1)) > 0.95


def test_threads_come_from_settings() -> None:
    assert _onnx_settings(Path("var")).resolved_embedding_threads == 1  # torch_threads=1
    assert _onnx_settings(Path("var"), embedding_threads=3).resolved_embedding_threads == 3


def test_an_unwritable_var_dir_raises_model_error(tmp_path: Path) -> None:
    from chatbot.retrieval.embed import default_embedder_path

    blocker = tmp_path / "models"
    blocker.write_text("a file where the models folder should be")
    with pytest.raises(ModelError, match="CHATBOT_VAR_DIR writable"):
        ensure_export(str(default_embedder_path()), blocker / "all-MiniLM-L6-v2-onnx")
