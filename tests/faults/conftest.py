"""Fixtures of the fault tests: tiny real language models that say a chosen text forever."""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import build_scripted_lm

# A supported first sentence, then one the support gate refuses: the gate cuts the answer.
CUT_TEXT = ("Standard shipping takes 3-5 business days [1]. "
            "The moon is made of green cheese on Tuesdays. ")
# Supported sentence after supported sentence: streams until the token limit.
FLUENT_TEXT = "Standard shipping takes 3-5 business days [1]. "


@pytest.fixture(scope="session")
def cut_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scripted_lm(tmp_path_factory.mktemp("cut_lm") / "model", CUT_TEXT)


@pytest.fixture(scope="session")
def fluent_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scripted_lm(tmp_path_factory.mktemp("fluent_lm") / "model", FLUENT_TEXT)
