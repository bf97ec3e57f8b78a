"""Text normalisation: tokenisation, the English stemmer and stopword lists, in one place.

Two consumers, one stemmer:

- the keyword (BM25) index: ``keyword_tokens`` is shared by index build and query so the two
  always agree (bm25s tokenisation with its English stopwords);
- the support check (``chatbot.answering.grounding``): ``content_words`` turns an answer sentence
  or a source into the stemmed words that carry a claim, dropping ``CLAIM_STOPWORDS``.

Nothing here knows about documents, indexes or answers; it only turns text into words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

# --- keyword tokenisation (shared by build and query so they always agree) ------------------


def keyword_stemmer() -> Any:
    """A new English Snowball stemmer (PyStemmer)."""
    import Stemmer

    return Stemmer.Stemmer("english")


def keyword_tokens(texts: Sequence[str], stemmer: Any) -> list[list[str]]:
    """BM25 tokens of each text: lower-cased, English stopwords removed, stemmed."""
    import bm25s

    tokens = bm25s.tokenize(
        list(texts), stopwords="english", stemmer=stemmer, return_ids=False, show_progress=False
    )
    return [list(t) for t in tokens]


# --- content words of a claim (the support check) -------------------------------------------

# Tuned for the support check: words that say nothing a source could back or contradict.
# Not the BM25 list above: this one also drops courtesy and pronouns.
_CLAIM_STOPWORD_TEXT = (
    "a an the and or but if of to in on at for from by with about as into than then so is are "
    "was were be been being am do does did have has had i you we they he she it me my your "
    "our their this that these those there here what which who whom when where why how can "
    "could would should will shall may might must not no yes just also very too only any some "
    "all each more most other such own same up down out over again further once its it's i'm "
    "you're we're don't can't please thanks thank hi hello sure let know get got us them him "
    "her "
    # Courtesy carries no claim to check ("Happy to help!", "Sorry about that.").
    "happy glad help assist sorry apologize apologies welcome great course anything else "
    "today question questions hope okay ok"
)
CLAIM_STOPWORDS = frozenset(_CLAIM_STOPWORD_TEXT.split())
# A word, with numbers kept whole ("3-5", "6.95", "24/7") so a changed figure cannot hide.
CLAIM_WORD = re.compile(r"[a-z0-9]+(?:[.,/-][a-z0-9]+)*")
_DIGIT = re.compile(r"\d")


@lru_cache(maxsize=1)
def _claim_stemmer() -> Any:
    """The keyword index's English stemmer, built once (the gate runs on every sentence)."""
    return keyword_stemmer()


def is_number(word: str) -> bool:
    """Whether a content word states a number (such words are kept unstemmed)."""
    return bool(_DIGIT.search(word))


def content_words(text: str) -> list[str]:
    """Stemmed words that carry meaning; numbers are kept whole ("3-5", "$6.95" -> "6.95")."""
    words = [w for w in CLAIM_WORD.findall(text.lower()) if w not in CLAIM_STOPWORDS]
    stemmer = _claim_stemmer()
    return [w if is_number(w) else stemmer.stemWord(w) for w in words]
