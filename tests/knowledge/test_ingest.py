"""Ingest: every format loads, ids are content hashes, bad input names file, line and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatbot.errors import IngestError
from chatbot.knowledge.ingest import ColumnMap, load_file, load_knowledge_base

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_tiny_kb_loads_faqs_and_dialogue_turns(tiny_kb: Path) -> None:
    docs = load_knowledge_base(tiny_kb)
    faqs = [d for d in docs if d.kind == "faq"]
    dialogues = [d for d in docs if d.kind == "dialogue"]
    assert len(faqs) == 5
    # dlg-0001 has one customer/agent pair, dlg-0002 two.
    assert sorted(d.record_id for d in dialogues) == ["dlg-0001#0", "dlg-0002#0", "dlg-0002#2"]
    follow_up = next(d for d in dialogues if d.record_id == "dlg-0002#2")
    assert follow_up.question == "how long will that take"
    assert [t.role for t in follow_up.context] == ["customer", "agent"]
    assert follow_up.outcome == "escalated"
    ship = next(d for d in faqs if d.record_id == "ship-001")
    assert ship.alternatives == ("how long is delivery", "when will my package arrive")
    assert ship.source == "faq.csv:2"


def test_ids_are_content_hashes_and_reloading_is_idempotent(tiny_kb: Path) -> None:
    first = load_knowledge_base(tiny_kb)
    second = load_knowledge_base(tiny_kb)
    assert [d.id for d in first] == [d.id for d in second]
    faq = tiny_kb / "faq.csv"
    faq.write_text(faq.read_text().replace("3-5 business days", "2-4 business days"))
    changed = {d.record_id: d.id for d in load_knowledge_base(tiny_kb)}
    before = {d.record_id: d.id for d in first}
    assert changed["ship-001"] != before["ship-001"]
    assert changed["ship-002"] == before["ship-002"]


def test_jsonl_and_markdown_faqs(tmp_path: Path) -> None:
    write(
        tmp_path / "extra.jsonl",
        json.dumps(
            {
                "id": "x-1",
                "question": "Q one?",
                "answer": "A one.",
                "alternatives": ["q1", "first q"],
            }
        )
        + "\n",
    )
    write(
        tmp_path / "faq" / "tiers.md",
        (
            "---\nid: loy-1\ncategory: loyalty\nquestion: What are the tiers?\n"
            "alternatives:\n  - which levels exist\n---\nThere are **three** tiers.\n"
        ),
    )
    docs = {d.record_id: d for d in load_knowledge_base(tmp_path)}
    assert docs["x-1"].alternatives == ("q1", "first q")
    assert docs["loy-1"].answer == "There are **three** tiers."
    assert docs["loy-1"].alternatives == ("which levels exist",)
    assert docs["loy-1"].source == "tiers.md:8"


def test_bitext_layout_imports_through_a_column_mapping(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "bitext.csv",
        (
            "flags,instruction,category,intent,response\n"
            "B,how do i cancel my order,ORDER,cancel_order,Go to Orders and click Cancel.\n"
        ),
    )
    write(
        tmp_path / "bitext.columns.json",
        json.dumps(
            {
                "question": "instruction",
                "answer": "response",
                "category": "intent",
                "ignore": ["flags", "category"],
            }
        ),
    )
    [doc] = load_file(csv_path)
    assert (doc.question, doc.answer, doc.category) == (
        "how do i cancel my order",
        "Go to Orders and click Cancel.",
        "cancel_order",
    )
    mapping = ColumnMap(columns={"question": "instruction", "answer": "response"})
    with pytest.raises(IngestError, match=r"unknown column\(s\) \['flags', 'category', 'intent'\]"):
        load_file(csv_path, column_map=mapping)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,question,answer\na,Q?,\n", r"faq.csv:2: missing answer"),
        ("id,question,answer\na,,A\n", r"faq.csv:2: missing question"),
        ("id,question,answer,colour\na,Q?,A,red\n", r"faq.csv:1: unknown column\(s\) \['colour'\]"),
        ("id,question\na,Q?\n", r"faq.csv:1: no column for 'answer'"),
        ("id,question,answer\na,Q?,A\nb,Q2?,A2,extra\n", r"faq.csv:3: 4 fields, header has 3"),
        (
            "id,question,answer\na,Q?,A\nb,Q2?,A2\na,Q?,Other answer\n",
            r"faq.csv:4: duplicate id 'a' with different content \(first defined at faq.csv:2\)",
        ),
    ],
)
def test_bad_csv_rows_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    write(tmp_path / "faq.csv", content)
    with pytest.raises(IngestError, match=message):
        load_knowledge_base(tmp_path)


def test_same_id_same_content_is_merged_not_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "id,question,answer\nx,Q?,A\n")
    write(tmp_path / "b.csv", "id,question,answer\nx,Q?,A\n")
    assert len(load_knowledge_base(tmp_path)) == 1


def test_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    write(tmp_path / "faq.csv", "id,question,answer\na,Q?,A\nb,Caf\xe9?,B\n".encode("latin-1"))
    with pytest.raises(IngestError, match=r"faq.csv:3: not valid UTF-8 .*save the file as UTF-8"):
        load_knowledge_base(tmp_path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"dialogues.jsonl:1: invalid JSON"),
        ('{"id": "d", "turns": []}', r"dialogues.jsonl:1: dialogue has no 'turns' list"),
        ('{"id": "d", "turns": [{"role": "bot", "text": "hi"}]}', r"turn 0: role must be"),
        ('{"id": "d", "turns": [{"role": "customer", "text": " "}]}', r"turn 0: empty text"),
    ],
)
def test_bad_dialogues_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    write(tmp_path / "dialogues.jsonl", line + "\n")
    with pytest.raises(IngestError, match=message):
        load_knowledge_base(tmp_path)


def test_markdown_without_front_matter_is_rejected(tmp_path: Path) -> None:
    write(tmp_path / "faq" / "bad.md", "Just an answer\n")
    with pytest.raises(IngestError, match=r"bad.md:1: no front matter"):
        load_knowledge_base(tmp_path)


def test_demo_knowledge_base_is_valid_and_large_enough() -> None:
    docs = load_knowledge_base(ROOT / "knowledge_base")
    faqs = [d for d in docs if d.kind == "faq"]
    dialogue_ids = {d.record_id.split("#")[0] for d in docs if d.kind == "dialogue"}
    assert len(faqs) >= 150
    assert len({d.category for d in faqs}) >= 12
    assert all(len(d.alternatives) >= 1 for d in faqs)
    assert len(dialogue_ids) >= 200
