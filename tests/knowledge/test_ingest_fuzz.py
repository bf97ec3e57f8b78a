"""Ingest under random input (hypothesis): any bytes, and random CSV, JSONL, Markdown and
dialogue files, give documents or an ``IngestError`` naming the file and a line in it; never
another exception. Valid random records load with their text as written (stripped)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from chatbot.errors import IngestError
from chatbot.knowledge.ingest import FAQ_FIELDS, first_control_character, load_file
from chatbot.types import Document

FUZZ = fuzz_settings(150)
NAMES = ("faq.csv", "faq.jsonl", "faq.md", "dialogues.jsonl")

# Text as it comes: any code point (hypothesis leaves surrogates out unless asked), with the
# characters that break parsers and databases drawn often.
TRICKY = st.sampled_from(["\x00", "\ud800", "\udfff", "\x1b", "\x85", "\u2028", "\u2029",
                          "\r", "\n", "\t", ",", '"', "|", "-", ":", "[", "{", "#", "\ufeff"])
ANY_CHAR = st.characters(exclude_categories=())
ANY_TEXT = st.text(st.one_of(ANY_CHAR, TRICKY), max_size=40)
# Text that a valid record may hold: printable, no control characters, not blank.
CLEAN_TEXT = st.text(st.one_of(st.characters(exclude_categories=("Cc", "Cs")),
                               st.sampled_from(["\u2028", "\u2029", ",", '"', "\t", "#"])),
                     min_size=1,
                     max_size=40).filter(lambda s: s.strip() and "|" not in s)
SCALARS = st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT
JSON_VALUES = st.recursive(
    st.none() | SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
FIELD_VALUES = st.one_of(ANY_TEXT, CLEAN_TEXT, JSON_VALUES)
# An FAQ record: question and answer always there (so most records get past "missing"), the
# other fields sometimes, and now and then a field that does not exist.
FAQ_RECORDS = st.fixed_dictionaries(
    {"question": st.one_of(ANY_TEXT, CLEAN_TEXT), "answer": st.one_of(ANY_TEXT, CLEAN_TEXT)},
    optional={"id": FIELD_VALUES, "category": FIELD_VALUES,
              "alternatives": st.one_of(FIELD_VALUES, st.lists(FIELD_VALUES, max_size=3))})
# Now and then a line that is not an FAQ record at all.
JUNK_LINES = st.one_of(JSON_VALUES, st.fixed_dictionaries({"other": FIELD_VALUES}))


def check_outcome(path: Path) -> list[Document]:
    """Load ``path``; the only allowed failure is an IngestError that points into the file."""
    try:
        documents = load_file(path)
    except IngestError as error:
        assert error.path == str(path)
        lines = path.read_bytes().count(b"\n") + 1
        assert error.line is None or 1 <= error.line <= lines + 1, (error.line, lines)
        assert f"{path}" in str(error)
        return []
    for document in documents:
        assert document.question.strip() and document.answer.strip()
        for text in (document.question, document.answer, document.record_id, document.category,
                     *document.alternatives):
            assert first_control_character(text) is None, text
        assert len(document.id) == 20
    return documents


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


@FUZZ
@given(name=st.sampled_from(NAMES), data=st.binary(max_size=400))
def test_random_bytes_never_crash(tmp_path: Path, name: str, data: bytes) -> None:
    check_outcome(write(tmp_path, name, data))


@FUZZ
@given(name=st.sampled_from(NAMES), text=st.text(st.one_of(ANY_CHAR, TRICKY), max_size=300))
def test_random_text_never_crashes(tmp_path: Path, name: str, text: str) -> None:
    check_outcome(write(tmp_path, name, text))


@FUZZ
@given(header=st.lists(st.sampled_from([*FAQ_FIELDS, "extra", ""]), min_size=1, max_size=6),
       rows=st.lists(st.lists(ANY_TEXT, max_size=7), max_size=6))
def test_random_csv_never_crashes(tmp_path: Path, header: list[str],
                                  rows: list[list[str]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in [header, *rows]:
        writer.writerow(row)
    check_outcome(write(tmp_path, "faq.csv", out.getvalue()))


@FUZZ
@given(rows=st.lists(st.tuples(CLEAN_TEXT, CLEAN_TEXT, CLEAN_TEXT), min_size=1, max_size=6,
                     unique_by=lambda r: r[0]))
def test_valid_csv_rows_load_as_written(tmp_path: Path,
                                        rows: list[tuple[str, str, str]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "question", "answer"])
    for record_id, question, answer in rows:
        writer.writerow([f"id-{record_id}", question, answer])
    documents = check_outcome(write(tmp_path, "faq.csv", out.getvalue()))
    assert [(d.question, d.answer) for d in documents] == [
        (q.strip(), a.strip()) for _, q, a in rows]


@FUZZ
@given(records=st.lists(FAQ_RECORDS, max_size=4), junk=st.none() | JUNK_LINES,
       where=st.integers(0, 4), ascii_only=st.booleans())
def test_random_jsonl_never_crashes(tmp_path: Path, records: list[Any], junk: Any, where: int,
                                    ascii_only: bool) -> None:
    if junk is not None:
        records.insert(where, junk)
    # ensure_ascii spells controls and surrogates as escapes: the file is clean, the values not.
    text = "\n".join(json.dumps(r, ensure_ascii=ascii_only) for r in records)
    check_outcome(write(tmp_path, "faq.jsonl", text))


@FUZZ
@given(records=st.lists(st.tuples(CLEAN_TEXT, CLEAN_TEXT, st.lists(CLEAN_TEXT, max_size=3)),
                        min_size=1, max_size=5, unique_by=lambda r: r[0]))
def test_valid_jsonl_records_load_as_written(
        tmp_path: Path, records: list[tuple[str, str, list[str]]]) -> None:
    # ensure_ascii=False: U+2028 and U+2029 stay raw inside JSON strings, which is valid JSON.
    text = "\n".join(json.dumps({"id": f"q{i}", "question": q, "answer": a, "alternatives": alts},
                                ensure_ascii=False) for i, (q, a, alts) in enumerate(records))
    documents = check_outcome(write(tmp_path, "faq.jsonl", text))
    assert [(d.question, d.answer) for d in documents] == [
        (q.strip(), a.strip()) for q, a, _ in records]


@FUZZ
@given(turns=st.lists(st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["customer", "agent"]), "text": FIELD_VALUES}),
    JSON_VALUES), max_size=5),
    extra=st.dictionaries(st.sampled_from(["id", "topic", "outcome", "channel"]), FIELD_VALUES))
def test_random_dialogues_never_crash(tmp_path: Path, turns: list[Any],
                                      extra: dict[str, Any]) -> None:
    check_outcome(write(tmp_path, "dialogues.jsonl", json.dumps({**extra, "turns": turns})))


@FUZZ
@given(meta=st.one_of(FAQ_RECORDS.map(lambda r: {k: v for k, v in r.items() if k != "answer"}),
                      JSON_VALUES, st.dictionaries(SCALARS, FIELD_VALUES, max_size=3)),
       body=ANY_TEXT, raw=st.booleans())
def test_random_markdown_never_crashes(tmp_path: Path, meta: Any, body: str, raw: bool) -> None:
    front = str(meta) if raw else yaml.safe_dump(meta, allow_unicode=True)
    check_outcome(write(tmp_path, "faq.md", f"---\n{front}\n---\n{body}\n"))
