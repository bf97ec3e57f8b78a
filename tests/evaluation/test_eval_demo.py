"""`chatbot eval-demo`: how rows are judged and counted (stand-in stages through the factory),
the command on a real index of the tiny knowledge base and its one-line errors, and the
held-out data file itself (well-formed, labels that exist, the promised counts, nothing copied
from the knowledge base)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from standin_stages import DIALOGUE, RETURNS, SHIPPING, StandInGenerator, StandInRetriever, hit
from typer.testing import CliRunner

from chatbot.answering.pipeline import build_pipeline
from chatbot.cli import app
from chatbot.config import Settings
from chatbot.errors import IngestError
from chatbot.evaluation.demo import DEFAULT_DATA, eval_demo, read_demo
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.index import reindex
from chatbot.types import Route

ROOT = Path(__file__).resolve().parents[2]
THRESHOLDS = {"answer": 0.6, "faq": 0.85, "support": 0.5, "source": "test"}
SHIPPING_ANSWER = "Standard shipping takes 3-5 business days within the US."

# message -> the hits the stand-in retriever returns (dense cosine decides the route).
HITS = {
    "how long is shipping": [hit(SHIPPING, 0.93), hit(RETURNS, 0.4, 2)],  # FAQ, right
    "when will my box show up": [hit(RETURNS, 0.91)],  # FAQ, wrong FAQ
    "when will my parcel come": [hit(SHIPPING, 0.72), hit(DIALOGUE, 0.6, 2)],  # generated
    "parcel??": [hit(SHIPPING, 0.3)],  # in scope, falls back
    "weather in bend?": [hit(RETURNS, 0.21)],  # none, falls back
    "do you rent kayaks": [hit(RETURNS, 0.9)],  # none, answered anyway
    "and to my cabin?": [hit(SHIPPING, 0.95)],  # follow-up, right
    "is it late": [hit(DIALOGUE, 0.75)],  # generated from a dialogue only
}


def _rows(path: Path, rows: list[dict]) -> Path:
    base = {"split": "test", "history": [], "kind": "in_scope"}
    path.write_text("".join(json.dumps({**base, "id": f"t-{n}", **row}) + "\n"
                            for n, row in enumerate(rows, start=1)), encoding="utf-8")
    return path


@pytest.fixture
def demo_file(tmp_path: Path) -> Path:
    history = [{"role": "customer", "text": "how long is shipping"},
               {"role": "agent", "text": SHIPPING_ANSWER}]
    return _rows(tmp_path / "demo.jsonl", [
        {"message": "how long is shipping", "faq_ids": ["ship-001"]},
        {"message": "when will my box show up", "faq_ids": ["ship-001"]},
        {"message": "when will my parcel come", "faq_ids": ["ship-001", "ship-002"]},
        {"message": "parcel??", "faq_ids": ["ship-001"]},
        {"message": "weather in bend?", "faq_ids": [], "kind": "off_topic"},
        {"message": "do you rent kayaks", "faq_ids": [], "kind": "near_domain"},
        {"message": "and to my cabin?", "faq_ids": ["ship-001"], "kind": "follow_up",
         "history": history},
        {"message": "is it late", "faq_ids": ["ship-001"]},
        {"message": "a dev row", "faq_ids": [], "split": "dev"},
    ])


def _stand_in(settings: Settings, text: str = "") -> tuple:  # type: ignore[type-arg]
    retriever = StandInRetriever(HITS, THRESHOLDS)
    generator = StandInGenerator(text or "Standard shipping takes 3-5 business days [1].")
    return build_pipeline(settings, retriever=retriever, generator=generator), retriever, generator


def test_rows_are_counted_by_verdict_route_and_kind(settings: Settings, demo_file: Path) -> None:
    pipeline, retriever, generator = _stand_in(settings)
    report = eval_demo(settings, path=demo_file, split="test", pipeline=pipeline)

    overall = report["overall"]
    assert (overall["rows"], overall["in_scope_rows"], overall["none_rows"]) == (8, 6, 2)
    assert overall["answered_correct"] == 3  # FAQ right, generated citing ship-001, follow-up
    assert overall["answered_wrong"] == 3  # wrong FAQ, dialogue-only citation, kayak answered
    assert overall["answered_wrong_in_scope"] == 2 and overall["answered_none"] == 1
    assert overall["fallback_in_scope"] == 1
    assert overall["oos_fallback_rows"] == 1 and overall["oos_fallback"] == 0.5
    assert overall["answered_correct_share"] == 0.5 and overall["precision"] == 0.5
    assert (overall["answered_correct_share"] + overall["answered_wrong_in_scope_share"]
            + overall["fallback_in_scope_share"]) == pytest.approx(1.0)

    assert report["routes"] == {"faq": 4, "generated": 2, "fallback": 2}
    faq = report["by_route"]["faq"]
    assert (faq["answered_correct"], faq["answered_wrong"]) == (2, 2)
    assert report["by_route"]["generated"]["answered_correct"] == 1
    assert report["by_route"]["fallback"]["fallback_in_scope"] == 1
    assert report["by_kind"]["off_topic"]["oos_fallback"] == 1.0
    assert report["by_kind"]["near_domain"]["oos_fallback"] == 0.0
    assert report["by_kind"]["follow_up"]["answered_correct"] == 1
    assert report["generated_top1_correct"] == 1
    assert report["wrong_in_scope_citing_only_dialogues"] == 1
    # The report states its rules next to the counts: dialogue-only citations are wrong, and
    # without a generator the generated route is an upper bound.
    assert "past dialogues only counts as wrong" in report["judging"]
    assert "upper bound" in report["judging"]

    wrong = {w["id"]: w for w in report["wrong_answers"]}
    assert set(wrong) == {"t-2", "t-6", "t-8"}
    assert wrong["t-2"]["route"] == "faq" and wrong["t-2"]["cited"] == ["ret-001"]
    assert wrong["t-2"]["expected"] == ["ship-001"]
    assert [m["id"] for m in report["fallback_in_scope_rows"]] == ["t-4"]

    # Routing only: the generator is never loaded; the follow-up's history reached retrieval
    # with the agent turn marked as an FAQ reply.
    assert generator.loads == 0 and not generator.prompts
    follow_up = dict(retriever.searches)["and to my cabin?"]
    assert [t.role for t in follow_up] == ["customer", "agent"]
    assert follow_up[1].route == Route.FAQ.value and follow_up[1].text == SHIPPING_ANSWER
    assert "a dev row" not in dict(retriever.searches)


def test_generation_mode_judges_the_cited_sources(settings: Settings, demo_file: Path) -> None:
    pipeline, _, generator = _stand_in(settings)
    report = eval_demo(settings, path=demo_file, split="test", pipeline=pipeline,
                       generator="stand-in")
    assert generator.prompts  # the generated rows really went through the generator
    assert "upper bound" not in report["judging"]  # real citations, not the routing stand-in
    assert report["by_route"]["generated"]["answered_correct"] == 1
    assert report["overall"]["answered_correct"] == 3
    dev = eval_demo(settings, path=demo_file, split="dev", pipeline=pipeline)
    assert dev["overall"]["rows"] == 1 and dev["overall"]["oos_fallback"] == 1.0


def test_bad_rows_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "split": "test", "message": "hi", "kind": "in_scope", '
                   '"faq_ids": []}\n{"id": "b", "split": "train", "message": "x", '
                   '"kind": "in_scope", "faq_ids": []}\n')
    with pytest.raises(IngestError, match=r"bad.jsonl:2: split 'train'"):
        read_demo(bad)
    bad.write_text('{"id": "a", "split": "test", "message": "hi", "kind": "in_scope", '
                   '"faq_ids": "ship-001"}\n')
    with pytest.raises(IngestError, match="bad.jsonl:1: 'faq_ids' must be a list"):
        read_demo(bad)
    good = ('{"id": "a", "split": "test", "message": "hi", "kind": "in_scope", '
            '"faq_ids": []}\n')
    for line, problem in (('["a list"]', "each line must be a JSON object"),
                          ("{oops", "invalid JSON"), (good.strip(), "duplicate id a")):
        bad.write_text(good + "\n" + line + "\n")  # a blank line still counts as a line
        with pytest.raises(IngestError, match=f"bad.jsonl:3: {problem}"):
            read_demo(bad)
    with pytest.raises(IngestError, match="missing.jsonl: cannot open"):
        read_demo(tmp_path / "missing.jsonl")


# --- the command on a real index of the tiny knowledge base ------------------------------------


def test_cli_eval_demo_on_the_tiny_index(settings: Settings, embedder: Embedder,
                                         tmp_path: Path) -> None:
    env = {"CHATBOT_VAR_DIR": str(settings.var_dir),
           "CHATBOT_KNOWLEDGE_BASE": str(settings.knowledge_base), "CHATBOT_TORCH_THREADS": "1"}
    data = _rows(tmp_path / "tiny.jsonl", [
        {"message": "How do I reset my password?", "faq_ids": ["acc-001"]},
        {"message": "what is the capital of mongolia", "faq_ids": [], "kind": "off_topic"},
    ])
    runner = CliRunner()
    missing = runner.invoke(app, ["eval-demo", "--data", str(data)], env=env)
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert "run `chatbot reindex`" in missing.output.strip().splitlines()[-1]

    reindex(settings, progress=False, embedder=embedder)
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["eval-demo", "--data", str(data), "--json", str(out)], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["overall"]["answered_correct"] == 1 and report["overall"]["oos_fallback"] == 1.0
    assert report["generator"] == "none (routing only)"

    wrong_kb = _rows(tmp_path / "other.jsonl", [{"message": "hi", "faq_ids": ["ord-001"]}])
    other = runner.invoke(app, ["eval-demo", "--data", str(wrong_kb)], env=env)
    assert other.exit_code == 1 and "has no FAQ ord-001" in other.output
    split = runner.invoke(app, ["eval-demo", "--split", "train"], env=env)
    assert split.exit_code == 1 and "--split must be test or dev" in split.output


# --- the held-out file -----------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> set[str]:
    return set(_TOKEN.findall(text.lower()))


def test_demo_heldout_file_is_well_formed_and_meets_its_counts() -> None:
    rows = read_demo(DEFAULT_DATA)  # also checks ids are unique and fields valid
    documents = load_knowledge_base(ROOT / "knowledge_base")
    answers = {d.record_id: d.answer for d in documents if d.kind == "faq"}
    assert all(re.fullmatch(r"h-\d{3}", r.id) for r in rows)
    assert {i for r in rows for i in r.faq_ids} <= set(answers)

    for row in rows:
        # Labels agree with kinds: in-scope kinds have FAQs, off-topic and near-domain none.
        assert bool(row.faq_ids) == (row.kind in ("in_scope", "multi_question")) or (
            row.kind == "follow_up"), row.id
        if row.kind == "follow_up":
            # A previous customer question and the bot's verbatim FAQ answer.
            assert [t.role for t in row.history] == ["customer", "agent"], row.id
            assert row.history[1].text in answers.values(), row.id
        else:
            assert not row.history, row.id

    for split, minimum in (("test", 200), ("dev", 100)):
        chosen = [r for r in rows if r.split == split]
        kinds = Counter(r.kind for r in chosen)
        assert len(chosen) >= minimum
        share = 0.3 if split == "dev" else 1.0  # dev: the same mix, about half as many
        assert kinds["near_domain"] >= 60 * share and kinds["follow_up"] >= 30 * share
        assert kinds["multi_question"] >= 10 * share and kinds["off_topic"] >= 5 * share
        assert sum(not r.faq_ids for r in chosen if r.kind == "follow_up") >= 3
        categories = {i.split("-")[0] for r in chosen for i in r.faq_ids}
        assert len(categories) == 15  # every FAQ category is covered in each split

    messages = [r.message.lower() for r in rows]
    assert len(set(messages)) == len(messages)

    # Written, not copied: no customer text is close to an FAQ question or phrasing, an
    # out-of-scope calibration line, or a dialogue's customer turn (token Jaccard <= 0.6).
    references = [p for d in documents for p in
                  (d.phrasings if d.kind == "faq" else (d.question,))]
    oos = ROOT / "knowledge_base" / "out_of_scope.txt"
    references += [line.strip() for line in oos.read_text(encoding="utf-8").splitlines()
                   if line.strip() and not line.startswith("#")]
    reference_tokens = [_tokens(r) for r in references]
    for row in rows:
        for text in (row.message, *(t.text for t in row.history if t.role == "customer")):
            mine = _tokens(text)
            worst = max(len(mine & ref) / len(mine | ref) for ref in reference_tokens)
            assert worst <= 0.6, (row.id, text)
