"""ROUGE-L, the routing and answer evaluations on small CSVs, calibration on the tiny knowledge
base, and the CLI commands that wrap them (calibrate, eval-routing, eval-answers, chat)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tiny_lm import tiny_lm_dir  # noqa: F401  (session fixture)
from typer.testing import CliRunner

from chatbot.answering.calibrate import calibrate, read_out_of_scope
from chatbot.cli import app
from chatbot.config import Settings
from chatbot.errors import IngestError
from chatbot.evaluation.answers import eval_answers, eval_routing
from chatbot.evaluation.datasets import spread
from chatbot.evaluation.metrics import rouge_l

OOS = ["what is the capital of mongolia", "who won the football world cup in 1998",
       "recommend a good pizza recipe", "how tall is mount everest",
       "what is the square root of 144", "translate hello into japanese"]


def _csv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def routing_files(tmp_path: Path) -> dict[str, Path]:
    kb = [("how long does shipping take", "shipping"), ("when will my package arrive", "shipping"),
          ("delivery time for my order", "shipping"), ("how do i return an item", "returns"),
          ("send back a product i bought", "returns"), ("return policy for shoes", "returns"),
          ("reset my password", "account"), ("i forgot my password", "account"),
          ("cannot log in to my account", "account")]
    test = [("how many days is shipping", "shipping"), ("return a jacket", "returns"),
            ("password reset link", "account")]
    cal = [("shipping takes how long", "shipping"), ("how to return shoes", "returns"),
           ("forgot password help", "account")]
    return {
        "kb": _csv(tmp_path / "kb.csv", ["text", "intent"], kb),
        "test": _csv(tmp_path / "test.csv", ["text", "intent"], test),
        "oos": _csv(tmp_path / "oos.csv", ["text"], [(q,) for q in OOS[:3]]),
        "cal_in": _csv(tmp_path / "cal_in.csv", ["text", "intent"], cal),
        "cal_out": _csv(tmp_path / "cal_out.csv", ["text"], [(q,) for q in OOS[3:]]),
    }


def test_rouge_l() -> None:
    assert rouge_l("Standard shipping takes 3 days", "standard shipping takes 3 days!") == 1.0
    assert rouge_l("apples", "oranges") == 0.0
    assert rouge_l("", "anything") == 0.0
    # LCS "the cat sat" = 3 tokens: precision 3/3, recall 3/4, F1 = 6/7.
    assert rouge_l("the cat sat", "the cat was sat") == pytest.approx(6 / 7)


def test_spread_samples_evenly() -> None:
    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert spread([1, 2], 5) == [1, 2] and spread([1, 2], None) == [1, 2]


def test_eval_routing_reports_the_contract_fields(settings: Settings,
                                                  routing_files: dict[str, Path]) -> None:
    f = routing_files
    plain = eval_routing(f["kb"], f["test"], f["oos"], text_col="text", label_col="intent",
                         settings=settings)
    for key in ("in_scope_answered", "in_scope_correct", "oos_fallback"):
        assert 0.0 <= plain[key] <= 1.0
    assert plain["in_scope_correct"] <= plain["in_scope_answered"]
    assert "defaults" in plain["thresholds"]["source"]
    calibrated = eval_routing(f["kb"], f["test"], f["oos"], text_col="text", label_col="intent",
                              settings=settings, calibrate_in=f["cal_in"],
                              calibrate_out=f["cal_out"])
    assert "cal_in.csv" in calibrated["thresholds"]["source"]
    assert calibrated["calibration"]["in_scope"] == 3.0
    assert calibrated["oos_fallback"] == 1.0  # pizza and football are far from every document


def test_eval_routing_names_a_missing_column(settings: Settings,
                                             routing_files: dict[str, Path]) -> None:
    f = routing_files
    with pytest.raises(IngestError, match="no column 'label'"):
        eval_routing(f["kb"], f["test"], f["oos"], text_col="text", label_col="label",
                     settings=settings)


@pytest.fixture
def answer_files(tmp_path: Path) -> tuple[Path, Path]:
    kb = [("How long does shipping take?", "Standard shipping takes 3-5 business days."),
          ("How do I return an item?", "Start a return from Orders within 60 days."),
          ("How do I reset my password?", "Click Forgot password on the sign-in page.")]
    test = [("how many days does shipping take", "Shipping takes 3-5 business days."),
            ("can I return my item", "You can start a return from Orders within 60 days.")]
    return (_csv(tmp_path / "qa.csv", ["question", "answer"], kb),
            _csv(tmp_path / "qa_test.csv", ["question", "answer"], test))


def test_eval_answers_verbatim_baseline(settings: Settings,
                                        answer_files: tuple[Path, Path]) -> None:
    kb, test = answer_files
    result = eval_answers(kb, test, question_col="question", answer_col="answer",
                          settings=settings, mode="verbatim")
    assert result["n"] == 2 and result["routes"] == {"faq": 1.0}
    assert result["rouge_l"] > 0.6 and result["groundedness"] == 1.0
    assert result["generator"] is None and result["tokens_per_s"] is None


def test_eval_answers_with_a_generator_path(settings: Settings, answer_files: tuple[Path, Path],
                                            tiny_lm_dir: Path) -> None:  # noqa: F811
    kb, test = answer_files
    s = settings.model_copy(update={"max_new_tokens": 8, "torch_threads": 1})
    result = eval_answers(kb, test, question_col="question", answer_col="answer", settings=s,
                          generator=str(tiny_lm_dir), mode="generate", limit=1)
    assert result["n"] == 1 and result["routes"] == {"generated": 1.0}
    assert result["tokens_per_s"] > 0 and 0.0 <= result["rouge_l"] <= 1.0
    assert result["generator"] == str(tiny_lm_dir)


def test_calibrate_on_the_tiny_knowledge_base(settings: Settings) -> None:
    (settings.knowledge_base / "out_of_scope.txt").write_text(
        "# off-topic\n" + "\n".join(OOS) + "\n", encoding="utf-8")
    assert read_out_of_scope(settings.knowledge_base / "out_of_scope.txt") == OOS
    thresholds, report = calibrate(settings.model_copy(update={"target_precision": 0.9}),
                                   progress=False)
    assert 0.0 < thresholds.answer <= thresholds.faq <= 1.0
    assert 0.0 < thresholds.support <= 1.0
    assert "10 held-out phrasings" in thresholds.source
    assert "target precision 0.9" in thresholds.source
    assert report["calibration_set"]["oos_fallback"] >= 0.5


def test_cli_calibrate_stores_thresholds_with_the_index(settings: Settings) -> None:
    from chatbot.retrieval.index import reindex
    from chatbot.retrieval.search import Retriever

    (settings.knowledge_base / "out_of_scope.txt").write_text("\n".join(OOS), encoding="utf-8")
    reindex(settings, progress=False)
    env = {"CHATBOT_VAR_DIR": str(settings.var_dir),
           "CHATBOT_KNOWLEDGE_BASE": str(settings.knowledge_base), "CHATBOT_TORCH_THREADS": "1"}
    result = CliRunner().invoke(app, ["calibrate"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    stored = Retriever(settings).manifest["thresholds"]
    assert stored["answer"] == report["thresholds"]["answer"]
    assert stored["source"].startswith("chatbot calibrate on")


def test_cli_errors_are_one_clean_line(tmp_path: Path) -> None:
    env = {"CHATBOT_VAR_DIR": str(tmp_path / "var"), "CHATBOT_KNOWLEDGE_BASE": str(tmp_path)}
    result = CliRunner().invoke(app, ["calibrate"], env=env)
    assert result.exit_code == 1
    assert "out_of_scope.txt" in result.output and "Traceback" not in result.output
    bad = CliRunner().invoke(app, ["eval-answers", "--kb", "x.csv", "--queries", "y.csv",
                                   "--question-col", "q", "--answer-col", "a", "--mode", "magic"])
    assert bad.exit_code == 1 and "--mode must be" in bad.output


def test_cli_chat_answers_in_the_terminal(settings: Settings) -> None:
    from chatbot.retrieval.index import reindex

    reindex(settings, progress=False)
    env = {"CHATBOT_VAR_DIR": str(settings.var_dir),
           "CHATBOT_KNOWLEDGE_BASE": str(settings.knowledge_base), "CHATBOT_TORCH_THREADS": "1"}
    result = CliRunner().invoke(app, ["chat"], input="How do I reset my password?\nquit\n", env=env)
    assert result.exit_code == 0, result.output
    assert "Click Forgot password" in result.output
    assert "[faq · confidence" in result.output and "acc-001" in result.output
