"""/health is ready only when the index, the embedder and the generator are loaded, and the
app's start-up (lifespan) loads them all, so the first customer waits for none of them. Real
index of the tiny knowledge base, real MiniLM embedder, a tiny real generator."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.conversations.engine import upgrade
from chatbot.retrieval.index import reindex
from chatbot.web.app import create_app


def _settings(settings: Settings, model: Path) -> Settings:
    # torch embedder: the ONNX export would cost a minute in every fresh temporary folder
    return settings.model_copy(update={"generator_model": str(model), "generator_adapter": "none",
                                       "embedding_backend": "torch", "torch_threads": 1,
                                       "max_new_tokens": 8})


def test_health_waits_for_the_models_and_the_start_up_loads_them(settings: Settings,
                                                                 cut_lm: Path) -> None:
    s = _settings(settings, cut_lm)
    upgrade(s)
    reindex(s, progress=False)
    pipeline = build_pipeline(s)  # nothing loaded yet
    app = create_app(s, pipeline=pipeline, mount_ui=False)

    cold = TestClient(app).get("/api/v1/health")  # no lifespan: no warm-up has run
    assert cold.status_code == 503
    assert cold.json()["reason"] == "not loaded yet: embedder, generator"  # the index loads on
    assert cold.json()["database"] == "ok"                                  # the check itself

    try:
        with TestClient(app) as client:  # start-up: the warm-up loads everything
            assert pipeline.retriever.embedder.loaded and pipeline.generator.loaded
            warm = client.get("/api/v1/health")
            assert warm.status_code == 200 and warm.json()["reason"] is None
            assert warm.json()["index_version"] == pipeline.index_version is not None
    finally:
        pipeline.retriever.embedder.close()  # its micro-batching thread


def test_health_says_the_index_is_missing(settings: Settings, cut_lm: Path) -> None:
    s = _settings(settings, cut_lm)
    upgrade(s)
    pipeline = build_pipeline(s)
    try:
        with TestClient(create_app(s, pipeline=pipeline, mount_ui=False)) as client:
            health = client.get("/api/v1/health")  # the server started; it says what's missing
            assert health.status_code == 503
            assert health.json()["reason"].startswith("not loaded yet: index")
            assert client.post("/api/v1/chat", json={"message": "hello"}).status_code == 503
    finally:
        pipeline.retriever.embedder.close()
