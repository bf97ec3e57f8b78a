"""The embedder tuning: trained on FAQ phrasings without the calibration ones, saved compactly,
applied offline to the shipped MiniLM (torch and ONNX alike), named apart so an index built
without it is not served with it, and calibrated on held-out phrasings only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chatbot.config import Settings
from chatbot.errors import ConfigError, IndexNotReadyError
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import DEFAULT_EMBEDDER_NAME, Embedder
from chatbot.retrieval.embedder_tuning import (
    CONFIG_FILE,
    SHIPPED_DIR,
    WEIGHTS_FILE,
    active_tuning,
    tuning_id,
)
from chatbot.retrieval.rerank import held_for_calibration


@pytest.fixture(scope="module")
def tuning(tmp_path_factory: pytest.TempPathFactory, tiny_faq_csv: str) -> Path:
    """A one-layer tuning trained for two steps on the tiny knowledge base."""
    from chatbot.training.embedder import tune_embedder

    root = tmp_path_factory.mktemp("tuning")
    kb = root / "kb"
    kb.mkdir()
    (kb / "faq.csv").write_text(tiny_faq_csv, encoding="utf-8")
    (kb / "out_of_scope.txt").write_text("how tall is mount everest\nbest pizza in town\n")
    s = Settings(var_dir=root / "var", knowledge_base=kb, torch_threads=1,
                 _env_file=None)  # type: ignore[call-arg]
    out = root / "tuning"
    metrics = tune_embedder(s, output=out, batch_size=4, train_layers=1, max_steps=2,
                            lr=1e-3, progress=False)
    assert metrics["steps"] == 2 and metrics["held_out_phrasings"] == 6
    return out


def test_tuning_rows_leave_out_every_phrasing_held_for_calibration(settings: Settings) -> None:
    from chatbot.training.embedder import tuning_rows

    documents = load_knowledge_base(settings.knowledge_base)
    train, held = tuning_rows(documents)
    faq_phrasings = {p for d in documents if d.kind == "faq" for p in d.phrasings}
    assert {t for t, _ in train} | {t for t, _ in held} == faq_phrasings
    assert held and all(held_for_calibration(t) for t, _ in held)
    assert not any(held_for_calibration(t) for t, _ in train)
    assert all(label.startswith(("ship-", "ret-", "pay-", "acc-")) for _, label in train)


def test_the_saved_tuning_holds_only_the_top_layer_in_fp16(tuning: Path) -> None:
    from safetensors.torch import load_file

    config = json.loads((tuning / CONFIG_FILE).read_text())
    tensors = load_file(str(tuning / WEIGHTS_FILE))
    assert set(tensors) == set(config["tensors"])
    assert tensors and all(name.startswith("encoder.layer.5.") for name in tensors)
    assert {str(t.dtype) for t in tensors.values()} == {"torch.float16"}
    assert config["meta"]["train_layers"] == 1 and config["base_path"] == ""


def test_a_tuned_embedder_has_its_own_name_and_other_vectors(settings: Settings,
                                                           tuning: Path) -> None:
    plain = Embedder(settings.model_copy(update={"embedding_backend": "torch"}))
    tuned_settings = settings.model_copy(update={"embedding_backend": "torch",
                                                 "embedder_tuning": str(tuning)})
    tuned = Embedder(tuned_settings)
    assert plain.model_name == DEFAULT_EMBEDDER_NAME
    assert tuned.model_name == f"{DEFAULT_EMBEDDER_NAME}+tuned-{tuning_id(tuning)}"
    text = "my parcel never showed up"
    cosine = float(plain.encode([text])[0] @ tuned.encode([text])[0])
    assert cosine < 0.9999  # the trained layer changed the vector
    folder = settings.models_dir / f"embedder-tuned-{tuning_id(tuning)}"
    marker = (folder / "tuning.json").stat().st_mtime_ns
    again = Embedder(tuned_settings).encode([text])[0]
    assert np.allclose(again, tuned.encode([text])[0], atol=1e-6)
    assert (folder / "tuning.json").stat().st_mtime_ns == marker  # reused, not written again


def test_the_onnx_backend_serves_the_same_tuned_vectors_as_torch(settings: Settings,
                                                                 tuning: Path) -> None:
    texts = ["can i pay with bitcoin", "the zipper on my tent broke"]
    torch_vectors = Embedder(settings.model_copy(update={
        "embedding_backend": "torch", "embedder_tuning": str(tuning)})).encode(texts)
    onnx = Embedder(settings.model_copy(update={"embedder_tuning": str(tuning)}))
    onnx_vectors = onnx.encode(texts)
    assert np.min(np.sum(torch_vectors * onnx_vectors, axis=1)) > 0.999


def test_an_index_built_without_the_tuning_is_not_served_with_it(settings: Settings,
                                                                tuning: Path,
                                                                embedder: Embedder) -> None:
    from chatbot.retrieval.index import reindex
    from chatbot.retrieval.search import Retriever

    reindex(settings, embedder=embedder, progress=False)
    tuned = settings.model_copy(update={"embedder_tuning": str(tuning)})
    with pytest.raises(IndexNotReadyError, match="reindex"):
        Retriever(tuned).search("where is my order")


def test_the_shipped_tuning_fits_the_shipped_model_only(tmp_path: Path, tuning: Path) -> None:
    base = {"var_dir": tmp_path, "_env_file": None}
    assert active_tuning(Settings(**base, embedder_tuning="shipped")) == SHIPPED_DIR  # type: ignore[arg-type]
    assert active_tuning(Settings(**base, embedder_tuning="shipped",  # type: ignore[arg-type]
                                  embedding_model=str(tmp_path / "other"))) is None
    assert active_tuning(Settings(**base, embedder_tuning="off")) is None  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as error:  # a tuning of the shipped body on another model
        active_tuning(Settings(**base, embedder_tuning=str(tuning),  # type: ignore[arg-type]
                               embedding_model=str(tmp_path / "other")))
    assert "CHATBOT_EMBEDDER_TUNING" in str(error.value)
    assert "CHATBOT_EMBEDDING_MODEL" in str(error.value)


def test_the_shipped_tuning_is_small_and_records_how_it_was_trained() -> None:
    config = json.loads((SHIPPED_DIR / CONFIG_FILE).read_text())
    assert (SHIPPED_DIR / WEIGHTS_FILE).stat().st_size < 20_000_000
    meta = config["meta"]
    assert meta["held_out_top1_after"] > meta["held_out_top1_before"]
    assert meta["knowledge_base"].endswith("knowledge_base")


def test_calibration_asks_only_held_out_phrasings_when_the_embedder_is_tuned(
        settings: Settings, tuning: Path) -> None:
    from chatbot.answering.calibrate import score_questions

    (settings.knowledge_base / "out_of_scope.txt").write_text(
        "how tall is mount everest\nbest pizza in new york\nwhat is the capital of peru\n")
    plain = score_questions(settings.model_copy(update={"embedding_backend": "torch"}),
                            progress=False)
    tuned = score_questions(settings.model_copy(update={"embedding_backend": "torch",
                                                        "embedder_tuning": str(tuning)}),
                            progress=False)
    assert not all(held_for_calibration(t) for t in plain.in_texts)
    assert tuned.in_texts and all(held_for_calibration(t) for t in tuned.in_texts)
    assert set(tuned.in_texts) == {t for t in plain.in_texts if held_for_calibration(t)}
    assert all(held_for_calibration(t) for t in tuned.out_texts)
