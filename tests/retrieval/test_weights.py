"""The one rule for weights folders named by a setting (reranker and verifier share it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatbot.errors import ConfigError, ModelError
from chatbot.retrieval.weights import WeightsKind


def kind(shipped: Path) -> WeightsKind:
    return WeightsKind("CHATBOT_THING", shipped, "thing.json", 2, "thing weights",
                       "chatbot finetune thing")


def test_off_shipped_and_a_path_resolve_to_none_the_shipped_folder_and_that_path(
        tmp_path: Path) -> None:
    shipped, other = tmp_path / "shipped", tmp_path / "mine"
    for folder in (shipped, other):
        folder.mkdir()
        (folder / "thing.json").write_text(json.dumps({"format": 2}))
    assert kind(shipped).resolve(" OFF ") is None
    assert kind(shipped).resolve("shipped") == shipped
    assert kind(shipped).resolve(str(other)) == other


def test_a_folder_without_the_config_names_the_setting_and_the_training_command(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        kind(tmp_path).resolve(str(tmp_path))
    assert "CHATBOT_THING=" in str(error.value)
    assert "chatbot finetune thing" in str(error.value)
    assert "CHATBOT_THING=off" in str(error.value)


def test_read_config_refuses_another_format_and_explains_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "thing.json").write_text(json.dumps({"format": 1, "meta": {}}))
    with pytest.raises(ModelError, match="format 1, this version reads 2"):
        kind(tmp_path).read_config(tmp_path)
    (tmp_path / "thing.json").write_text(json.dumps({"format": 2, "meta": {"x": 1}}))
    assert kind(tmp_path).read_config(tmp_path)["meta"] == {"x": 1}
    with pytest.raises(ModelError, match="no thing weights in .*chatbot finetune thing --output"):
        kind(tmp_path).read_config(tmp_path / "missing")
