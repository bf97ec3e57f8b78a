"""Shared fixtures: offline environment, temporary settings and databases, a tiny knowledge base.

Models: the shipped all-MiniLM-L6-v2 loads from site-packages in about a second, so retrieval
tests use the real embedder (session-scoped). Generator tests build tiny real causal LMs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The shipped MiniLM as such unless a test asks for the tuning (tests/retrieval/
# test_embedder_tuning.py): routing tests are written for its cosines.
os.environ.setdefault("CHATBOT_EMBEDDER_TUNING", "off")

from chatbot.config import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"

TINY_FAQ_CSV = """id,category,question,answer,alternatives
ship-001,shipping,How long does standard shipping take?,Standard shipping takes 3-5 business days.,how long is delivery | when will my package arrive
ship-002,shipping,Do you ship to Canada?,Yes. We ship to all Canadian provinces in 5-8 business days.,can you deliver to canada | shipping to toronto
ret-001,returns,How do I return an item?,Start a return from Orders in your account within 60 days and print the free label.,how can i send something back | return process
pay-001,payments,Which payment methods do you accept?,"We accept Visa, Mastercard, American Express, PayPal and gift cards.",can i pay with paypal | what cards do you take
acc-001,account,How do I reset my password?,Click Forgot password on the sign-in page and follow the emailed link.,forgot my password | cant log in password reset
"""

TINY_DIALOGUES = (
    '{"id": "dlg-0001", "channel": "chat", "topic": "orders", "outcome": "resolved", "turns": ['
    '{"role": "customer", "text": "my order PC-100 hasnt arrived yet"}, '
    '{"role": "agent", "text": "Sorry about that! It shipped yesterday and should arrive Friday."}]}\n'
    '{"id": "dlg-0002", "channel": "chat", "topic": "warranty", "outcome": "escalated", "turns": ['
    '{"role": "customer", "text": "the zipper on my tent broke after a month"}, '
    '{"role": "agent", "text": "That is covered by our 2-year warranty; I am passing this to our '
    'warranty team."}, '
    '{"role": "customer", "text": "how long will that take"}, '
    '{"role": "agent", "text": "The warranty team replies within 2 business days."}]}\n'
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshots", metavar="DIR", default=None,
        help="Keep the browser tests' screenshots in DIR (`make screenshots` uses bench/results); "
        "by default they go to a temporary folder, so tests never touch tracked files.")


@pytest.fixture(scope="session")
def screenshot_dir(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save their screenshots (see ``--screenshots``)."""
    chosen = request.config.getoption("--screenshots")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_faq_csv() -> str:
    """The tiny knowledge base's faq.csv, for fixtures wider than one test."""
    return TINY_FAQ_CSV


@pytest.fixture
def tiny_kb(tmp_path: Path) -> Path:
    """A small knowledge base folder: five FAQs in CSV and two dialogues."""
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "faq.csv").write_text(TINY_FAQ_CSV, encoding="utf-8")
    (kb / "dialogues.jsonl").write_text(TINY_DIALOGUES, encoding="utf-8")
    return kb


@pytest.fixture
def settings(tmp_path: Path, tiny_kb: Path) -> Settings:
    """Settings pointing every path into a temporary folder, with the tiny knowledge base."""
    return Settings(
        var_dir=tmp_path / "var",
        knowledge_base=tiny_kb,
        reranker="off",  # routing tests are written for the cosine; reranker tests turn it on
        verifier="off",  # gate tests are written for the lexical pass; verifier tests turn it on
        embedder_tuning="off",  # the shipped MiniLM as such; tuning tests turn it on
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The PostgreSQL URL from CHATBOT_TEST_DATABASE_URL; the test skips when it is unset."""
    url = os.environ.get("CHATBOT_TEST_DATABASE_URL")
    if not url:
        pytest.skip("CHATBOT_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    yield url


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """../shared/datasets, or skip when it is absent (it is not part of the repository)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip("../shared/datasets is absent")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    """The shipped all-MiniLM-L6-v2, loaded once for the session (offline, ~1 s)."""
    from chatbot.retrieval.embed import Embedder

    return Embedder(Settings(torch_threads=1, embedder_tuning="off", _env_file=None))  # type: ignore[call-arg]
