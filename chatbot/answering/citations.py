"""What a customer may see of an answer's sources: FAQ entries only, numbered as the text cites
them.

A grounded prompt numbers its sources [1]..[n] in retrieval order, FAQ entries and past
dialogues alike: past dialogues inform generation. A customer never sees a past dialogue,
neither its customer's words nor the agent's reply (which may carry that customer's name,
order or address, details no pattern redacts), and a "[2]" in the text must never point at a
source the customer is not shown. So:

- ``visible_sources(hits)``: the FAQ hits, in order; what is listed under an answer
  (``chatbot.conversations.views.sources`` numbers them 1, 2, ...). Staff views and the log
  keep every hit.
- ``CustomerCitations`` rewrites the [n] markers of a generated answer as it streams: a
  citation of an FAQ source becomes that source's number in the list the customer sees
  (numbered by first citation: the order ``Policy.finish_generated`` keeps the cited sources
  in), and a citation of a dialogue or of nothing is removed with the space before it. The
  pipeline passes every piece the support gate releases through it and builds the final text
  from the same rewritten pieces, so the streamed and the final text stay equal. Pieces are
  whole sentences with their trailing citations (the gate never cuts inside a marker), which is
  what lets each piece be rewritten on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from chatbot.answering import prompt
from chatbot.types import Hit

# A run of markers with the whitespace before each: "days [2]." loses " [2]", not just "[2]",
# and in "days [2][1]." the kept marker takes the run's space.
_RUN = re.compile(r"(?:\s*" + prompt.CITATION.pattern + ")+")
_ONE = re.compile(r"(\s*)" + prompt.CITATION.pattern)


def visible(hit: Hit) -> bool:
    """Whether a customer may be shown this source: only the company's approved FAQ entries."""
    return hit.document.kind == "faq"


def visible_sources(hits: Iterable[Hit]) -> list[Hit]:
    return [hit for hit in hits if visible(hit)]


class CustomerCitations:
    """Rewrites the citations of a generated answer whose prompt had ``sources`` (in prompt
    order) into what the customer sees; keeps the rewritten text."""

    def __init__(self, sources: Sequence[Hit]) -> None:
        self.sources = tuple(sources)
        self.numbers: dict[int, int] = {}  # prompt number -> number the customer sees
        self.pieces: list[str] = []
        self._started = False  # whether any text was shown yet

    @property
    def text(self) -> str:
        """Everything rewritten so far, as the customer saw it."""
        return "".join(self.pieces)

    def rewrite(self, pieces: Iterable[str]) -> list[str]:
        """The pieces as the customer sees them, one for one (a piece may become empty)."""
        out = []
        for piece in pieces:
            shown = _RUN.sub(self._run, piece)
            if not self._started:  # the answer may have started with a removed citation
                shown = shown.lstrip()
                self._started = bool(shown)
            self.pieces.append(shown)
            out.append(shown)
        return out

    def _run(self, match: re.Match[str]) -> str:
        markers = list(_ONE.finditer(match.group(0)))
        kept = [(m.group(1), self._number(int(m.group(2)))) for m in markers]
        shown = [(space, n) for space, n in kept if n is not None]
        if not shown:
            return ""
        return markers[0].group(1) + "".join(
            f"[{n}]" if i == 0 else f"{space}[{n}]" for i, (space, n) in enumerate(shown))

    def _number(self, n: int) -> int | None:
        """The number the customer sees for prompt source ``n``; None when it is not shown."""
        if not 1 <= n <= len(self.sources) or not visible(self.sources[n - 1]):
            return None
        return self.numbers.setdefault(n, len(self.numbers) + 1)
