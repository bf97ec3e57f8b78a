"""Folders of trained model weights that a setting names: the reranker's cross-encoder and the
grounding verifier's head. One rule for both: ``off`` turns the model off, ``shipped`` takes the
folder inside the package, anything else is a path; a folder is usable when it holds the model's
JSON config in the format this version reads. Errors name the setting and the command that
trains such weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.errors import ConfigError, ModelError


@dataclass(frozen=True)
class WeightsKind:
    """What one kind of trained weights looks like on disk."""

    setting: str  # the environment variable, e.g. CHATBOT_RERANKER
    shipped: Path  # the folder shipped inside the package
    config_file: str  # the JSON every such folder holds
    format: int  # the config format this version reads
    what: str  # e.g. "cross-encoder weights"
    command: str  # the command that trains them, e.g. "chatbot finetune reranker"

    def resolve(self, value: str) -> Path | None:
        """Setting value -> weights folder: 'off' -> None, 'shipped' -> the shipped folder,
        else a path, which must hold ``config_file``."""
        value = value.strip()
        if value.lower() == "off":
            return None
        path = self.shipped if value.lower() == "shipped" else Path(value).expanduser()
        if not (path / self.config_file).is_file():
            raise ConfigError(f"{self.setting}={value}: no {self.config_file} in {path} (train "
                              f"one with `{self.command}`, or set {self.setting}=off)")
        return path

    def read_config(self, weights_dir: Path) -> dict[str, Any]:
        """The folder's JSON config; a clear error when it is missing or in another format."""
        path = weights_dir / self.config_file
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ModelError(f"no {self.what} in {weights_dir} ({path.name}: {error}): train "
                             f"some with `{self.command} --output DIR`") from error
        if config.get("format") != self.format:
            raise ModelError(f"{path}: format {config.get('format')!r}, this version reads "
                             f"{self.format}")
        return dict(config)
