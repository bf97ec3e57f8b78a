"""Ingest: read the knowledge base into validated ``Document`` records.

Formats (see README "Data formats"):

- FAQ as CSV (``id,category,question,answer,alternatives``; alternatives separated by `` | ``),
  as JSONL (same fields, ``alternatives`` a list or a `` | `` string), or as Markdown with YAML
  front matter (``id``, ``category``, ``question``, ``alternatives``; the body is the answer).
- Dialogues as JSONL (files whose name contains ``dialogue``): ``id``, ``turns`` (list of
  ``{"role": "customer"|"agent", "text": ...}``), optional ``topic``, ``outcome``, ``channel``.
  Each customer turn followed by an agent turn becomes one document whose answer is that reply.

Other CSV layouts are imported through a column mapping (``ColumnMap``), from a sidecar file
``<name>.columns.json`` next to the CSV or passed in code. Every problem raises ``IngestError``
naming the file, the line and the fix; nothing is half-loaded, and no input makes it raise
anything else (tests/knowledge/test_ingest_fuzz.py). Text may not hold control characters (tab
and line breaks aside) or lone surrogates, raw in the file or spelled as a JSON or YAML escape:
``CONTROL_CHARACTERS`` is the one definition, shared with the API's input rule
(``chatbot.answering.inputs``). JSONL lines are counted at line feeds only, as editors count.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chatbot.errors import IngestError
from chatbot.types import Document, Turn

FAQ_FIELDS = ("id", "category", "question", "answer", "alternatives")
ALT_SEPARATOR = " | "
# Dialogue documents carry this many earlier turns as context (for prompts and fine-tuning).
DIALOGUE_CONTEXT_TURNS = 4
SKIPPED_NAMES = {"readme.md", "training.md"}
# Characters no text we store may contain (knowledge files and customer input alike; the web
# edge uses the same rule through chatbot.answering.inputs): the C0 controls except tab, line
# feed and carriage return, DEL, the C1 controls, and lone surrogates (JSON and YAML can spell
# them as escapes, but they are not characters and cannot be encoded for a file or database).
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def first_control_character(text: str) -> int | None:
    """The position of the first rejected control character in ``text``, or None."""
    found = CONTROL_CHARACTERS.search(text)
    return None if found is None else found.start()


@dataclass(frozen=True)
class ColumnMap:
    """Maps our FAQ fields to another CSV layout's columns.

    ``columns`` maps our field (question, answer, id, category, alternatives) to the file's
    column name; ``ignore`` lists the file's columns to skip. Any other column is an error, so a
    typo in a header is caught instead of silently dropped.
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, path: Path) -> ColumnMap:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise IngestError(str(path), None, f"unreadable column mapping: {error}") from error
        if not isinstance(raw, dict):
            raise IngestError(str(path), None, "a column mapping must be a JSON object")
        ignore = raw.pop("ignore", [])
        if not isinstance(ignore, list):
            raise IngestError(str(path), None, "'ignore' must be a list of column names")
        unknown = set(raw) - set(FAQ_FIELDS)
        if unknown:
            raise IngestError(
                str(path),
                None,
                f"unknown field(s) {sorted(unknown)} in column mapping",
                f"map only {', '.join(FAQ_FIELDS)} and list skipped columns under 'ignore'",
            )
        return cls(columns={k: str(v) for k, v in raw.items()}, ignore=tuple(map(str, ignore)))


def load_knowledge_base(path: Path, *, column_map: ColumnMap | None = None) -> list[Document]:
    """Load every supported file under ``path`` (a folder or one file) into documents.

    Raises ``IngestError`` on the first malformed record. Identical records (same id and same
    content) are merged, so loading the same data twice gives the same documents.
    """
    if not path.exists():
        raise IngestError(str(path), None, "knowledge base not found", "set CHATBOT_KNOWLEDGE_BASE")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    documents: list[Document] = []
    for file in files:
        documents.extend(load_file(file, column_map=column_map))
    return _deduplicate(documents)


def load_file(path: Path, *, column_map: ColumnMap | None = None) -> list[Document]:
    """Load one file by its extension; files of other types (and READMEs) are skipped."""
    name = path.name.lower()
    if name in SKIPPED_NAMES or name.endswith(".columns.json") or name.startswith("."):
        return []
    if name.endswith(".csv"):
        sidecar = path.with_name(path.stem + ".columns.json")
        mapping = column_map or (ColumnMap.from_json(sidecar) if sidecar.exists() else None)
        return list(_read_faq_csv(path, mapping))
    if name.endswith(".jsonl"):
        if "dialogue" in name:
            return list(_read_dialogues(path))
        return list(_read_faq_jsonl(path))
    if name.endswith(".md"):
        return [_read_faq_markdown(path)]
    return []


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise IngestError(
            str(path), line, f"not valid UTF-8 (byte 0x{data[error.start]:02x})",
            "save the file as UTF-8",
        ) from error
    position = first_control_character(text)
    if position is not None:
        raise IngestError(str(path), text.count("\n", 0, position) + 1,
                          _control_problem(text[position]), _CONTROL_FIX)
    return text


_CONTROL_FIX = "remove it; tabs and line breaks are fine"


def _control_problem(character: str) -> str:
    return f"control character U+{ord(character):04X} in the text"


def _lines(text: str) -> list[str]:
    """The file's lines as an editor numbers them: split at line feeds only (``splitlines``
    would also split at U+2028 and U+2029, which JSON strings may hold as they are)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _clean(value: Any, path: Path, line: int, field: str) -> str:
    """A record's field as stripped text; control characters (which JSON and YAML can spell as
    escapes, so the file itself may be clean) are an error naming the field."""
    text = str(value).strip() if value is not None else ""
    position = first_control_character(text)
    if position is not None:
        raise IngestError(str(path), line, f"{field}: {_control_problem(text[position])}",
                          _CONTROL_FIX)
    return text


def _split_alternatives(value: Any, path: Path, line: int) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        parts: Iterable[Any] = value.split("|")
    elif isinstance(value, list):
        parts = value
    else:
        raise IngestError(str(path), line, "alternatives must be a list or a '|'-separated string")
    cleaned = (_clean(p, path, line, "alternatives") for p in parts)
    return tuple(dict.fromkeys(p for p in cleaned if p))


def _faq_document(
    record: Mapping[str, Any], path: Path, line: int, default_id: str
) -> Document:
    question = _clean(record.get("question") or "", path, line, "question")
    answer = _clean(record.get("answer") or "", path, line, "answer")
    if not question:
        raise IngestError(str(path), line, "missing question", "every FAQ needs a question")
    if not answer:
        raise IngestError(str(path), line, "missing answer", "every FAQ needs an approved answer")
    record_id = _clean(record.get("id") or "", path, line, "id") or default_id
    category = _clean(record.get("category") or "", path, line, "category")
    alternatives = tuple(
        a for a in _split_alternatives(record.get("alternatives"), path, line) if a != question
    )
    doc_id = Document.content_hash(
        kind="faq", record_id=record_id, question=question, answer=answer,
        category=category, alternatives=alternatives,
    )
    return Document(
        id=doc_id, record_id=record_id, kind="faq", question=question, answer=answer,
        category=category, alternatives=alternatives, source=f"{path.name}:{line}",
    )


def _read_faq_csv(path: Path, mapping: ColumnMap | None) -> Iterator[Document]:
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    header = next(_csv_rows(reader, path), None)
    if header is None:
        return
    header = [h.strip() for h in header]
    columns = dict(mapping.columns) if mapping else {f: f for f in FAQ_FIELDS}
    ignore = set(mapping.ignore) if mapping else set()
    reverse = {their: ours for ours, their in columns.items()}
    unknown = [h for h in header if h not in reverse and h not in ignore]
    if unknown:
        raise IngestError(
            str(path), 1, f"unknown column(s) {unknown}",
            f"expected {', '.join(FAQ_FIELDS)}; for another layout add "
            f"{path.stem}.columns.json mapping our fields to your columns",
        )
    for needed in ("question", "answer"):
        if columns.get(needed) not in header:
            raise IngestError(str(path), 1, f"no column for '{needed}'", "add it or map it")
    line = reader.line_num + 1
    for row in _csv_rows(reader, path):
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise IngestError(
                str(path), start, f"{len(row)} fields, header has {len(header)}",
                "quote fields that contain commas",
            )
        record = {reverse[h]: v for h, v in zip(header, row, strict=True) if h in reverse}
        yield _faq_document(record, path, start, default_id=f"{path.stem}-{start}")


def _csv_rows(reader: Any, path: Path) -> Iterator[list[str]]:
    """The reader's rows; the csv module's own errors (a field past its size limit) become an
    IngestError at the line where the reader stopped."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise IngestError(str(path), reader.line_num or 1, f"unreadable CSV: {error}",
                              "check the quoting of that row") from error
        yield row


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, raw in enumerate(_lines(_read_text(path)), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as error:
            raise IngestError(str(path), number, f"invalid JSON: {error.msg}") from error
        except (ValueError, RecursionError) as error:  # a 5000-digit number, deep nesting
            raise IngestError(str(path), number, f"unreadable JSON: {error}") from error
        if not isinstance(value, dict):
            raise IngestError(str(path), number, "each line must be a JSON object")
        yield number, value


def _read_faq_jsonl(path: Path) -> Iterator[Document]:
    for number, record in _json_lines(path):
        unknown = set(record) - set(FAQ_FIELDS)
        if unknown:
            raise IngestError(
                str(path), number, f"unknown field(s) {sorted(map(repr, unknown))}",
                f"FAQ JSONL fields are {', '.join(FAQ_FIELDS)}",
            )
        yield _faq_document(record, path, number, default_id=f"{path.stem}-{number}")


def _read_faq_markdown(path: Path) -> Document:
    lines = _lines(_read_text(path))
    if not lines or lines[0].strip() != "---":
        raise IngestError(str(path), 1, "no front matter", "start the file with a '---' block")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise IngestError(str(path), 1, "front matter is not closed", "add a '---' line") from None
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        raise IngestError(str(path), 2, f"invalid YAML front matter: {error}") from error
    if not isinstance(meta, dict):
        raise IngestError(str(path), 2, "front matter must be a mapping")
    unknown = [key for key in meta if key not in FAQ_FIELDS]  # keys may be numbers or dates
    if unknown:
        raise IngestError(str(path), 2,
                          f"unknown front matter key(s) {sorted(map(repr, unknown))}")
    record = {**meta, "answer": "\n".join(lines[end + 1 :]).strip()}
    return _faq_document(record, path, end + 2, default_id=path.stem)


def _read_dialogues(path: Path) -> Iterator[Document]:
    for number, record in _json_lines(path):
        dialogue_id = _clean(record.get("id") or "", path, number, "id") or f"{path.stem}-{number}"
        raw_turns = record.get("turns")
        if not isinstance(raw_turns, list) or not raw_turns:
            raise IngestError(str(path), number, "dialogue has no 'turns' list")
        turns: list[Turn] = []
        for position, turn in enumerate(raw_turns):
            role = turn.get("role") if isinstance(turn, dict) else None
            text = (_clean(turn.get("text") or "", path, number, f"turn {position}")
                    if isinstance(turn, dict) else "")
            if role not in ("customer", "agent"):
                raise IngestError(
                    str(path), number, f"turn {position}: role must be 'customer' or 'agent'"
                )
            if not text:
                raise IngestError(str(path), number, f"turn {position}: empty text")
            turns.append(Turn(role=role, text=text))
        topic = _clean(record.get("topic") or "", path, number, "topic")
        outcome = _clean(record.get("outcome") or "", path, number, "outcome")
        for i in range(len(turns) - 1):
            if turns[i].role != "customer" or turns[i + 1].role != "agent":
                continue
            context = tuple(turns[max(0, i - DIALOGUE_CONTEXT_TURNS) : i])
            record_id = f"{dialogue_id}#{i}"
            question, answer = turns[i].text, turns[i + 1].text
            yield Document(
                id=Document.content_hash(
                    kind="dialogue", record_id=record_id, question=question, answer=answer,
                    category=topic, context=context,
                ),
                record_id=record_id, kind="dialogue", question=question, answer=answer,
                category=topic, context=context, source=f"{path.name}:{number}",
                outcome=str(outcome) if outcome else None,
            )


def _deduplicate(documents: list[Document]) -> list[Document]:
    seen: dict[str, Document] = {}
    for document in documents:
        previous = seen.get(document.record_id)
        if previous is None:
            seen[document.record_id] = document
        elif previous.id != document.id:
            path, _, line = document.source.rpartition(":")
            raise IngestError(
                path, int(line) if line.isdigit() else None,
                f"duplicate id '{document.record_id}' with different content "
                f"(first defined at {previous.source})",
                "give each entry its own id",
            )
    return list(seen.values())
