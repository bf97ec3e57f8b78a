"""Synthetic training and held-out data for the grounding verifier (``chatbot.answering.verify``).

Every pair is (source, sentence, label): the source is an approved text the gate checks
against (an FAQ answer or a past agent turn, never a customer's words), the sentence is a claim
a generator could make. For each claim sentence of a source:

- faithful (label 1): the sentence itself (``same``), light rewrites that keep its meaning
  (``rewrite``: contractions, synonyms, a condition moved to the other end of the sentence,
  politeness dropped or a courtesy prefix added) and one clause of it on its own (``part``);
- perturbed (label 0), each kind from its own rule: ``negation`` added or removed, a ``number``,
  ``price`` or ``duration`` changed (to a value of the same kind found in the knowledge base,
  often one from the same source, or a time unit swapped), a ``place`` or an ``entity``
  (carrier, payment method, contact channel) swapped for another one the knowledge base names,
  a ``condition`` dropped ("Orders over $500 require ..." -> "Orders require ...", "unless ...",
  "if ..., ", "within 60 days"), and a sentence of the most similar other FAQ (``neighbour``)
  presented against this source. Perturbations are applied to a rewrite half of the time, so
  the verifier cannot tell them apart by verbatim overlap alone.

``split_groups`` keeps FAQs (and the dialogues closest to them) on one side only: the held-out
perturbation set (``bench/data/verifier_heldout.jsonl``, ``write_heldout``) never shares an FAQ
with training. Everything is deterministic under a seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from chatbot.answering.grounding import sentences
from chatbot.retrieval.text import content_words
from chatbot.types import Document

POSITIVE_KINDS = ("same", "rewrite", "part")
NEGATIVE_KINDS = ("negation", "number", "price", "duration", "place", "entity", "condition",
                  "neighbour")
MIN_CLAIM_WORDS = 3  # shorter sentences ("Yes.", "1.") make no claim worth a pair


@dataclass(frozen=True)
class Pair:
    """One verifier example: does ``source`` entail ``sentence``?"""

    source: str
    sentence: str
    label: int  # 1: entailed (faithful), 0: not (perturbed)
    kind: str
    group: str  # FAQ id or dialogue id: a split never separates a group


# --- vocabulary of the knowledge base -----------------------------------------------------------

# Places and entities a support answer names. Only those the knowledge base itself mentions are
# used, so a swap stays inside the company's own vocabulary (and passes the lexical check).
_PLACES = ("the United States", "the US", "Canada", "Germany", "France", "the Netherlands",
           "Ireland", "the UK", "Australia", "Mexico", "the EU", "Alaska", "Hawaii",
           "Puerto Rico", "California", "Nevada", "Oregon", "Reno", "Bend", "Munich", "Toronto",
           "Quebec", "Texas", "New York")
_ENTITIES = ("UPS", "USPS", "DHL", "Canada Post", "FedEx", "Visa", "Mastercard",
             "American Express", "Amex", "Discover", "PayPal", "Apple Pay", "Google Pay",
             "Klarna", "gift card", "eGift card", "store credit", "email", "chat", "phone",
             "text message", "the app", "the website", "Trail Points", "Express", "Standard")
_NUMBER = re.compile(
    r"(?P<cur>C\$|\$|€)?(?P<num>\d+(?:[.,]\d+)*)(?:(?P<dash>[–-])(?P<num2>\d+(?:[.,]\d+)*))?"
    r"(?P<unit>%| ?(?:business days?|days?|hours?|minutes?|weeks?|months?|years?))?")
_TIME_UNITS = {"minute": "hour", "hour": "day", "day": "week", "business day": "week",
               "week": "month", "month": "year", "year": "month"}


def _mentions(term: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-])", text) is not None


@dataclass
class Vocabulary:
    """Values of each kind the knowledge base uses: prices by currency, numbers by unit, places
    and entities; perturbations draw replacements from here."""

    values: dict[str, list[str]]  # "price:$", "duration:days", "number:%", ... -> values
    places: list[str]
    entities: list[str]

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> Vocabulary:
        values: dict[str, set[str]] = {}
        for text in texts:
            for match in _NUMBER.finditer(text):
                values.setdefault(_number_kind(match), set()).add(match.group("num"))
        joined = "\n".join(texts)
        return cls({k: sorted(v) for k, v in values.items()},
                   [p for p in _PLACES if _mentions(p, joined)],
                   [e for e in _ENTITIES if _mentions(e, joined)])


def _number_kind(match: re.Match[str]) -> str:
    """"price:$", "duration:day", "number:%" or "number:" for a matched number."""
    if match.group("cur"):
        return f"price:{match.group('cur')}"
    unit = (match.group("unit") or "").strip()
    if unit and unit != "%":
        return "duration:" + unit.removesuffix("s")
    return f"number:{unit}"


# --- faithful rewrites ----------------------------------------------------------------------

_CONTRACTIONS = {"can't": "cannot", "don't": "do not", "doesn't": "does not", "isn't": "is not",
                 "aren't": "are not", "won't": "will not", "it's": "it is", "we'll": "we will",
                 "you'll": "you will", "we're": "we are", "you're": "you are",
                 "there's": "there is", "that's": "that is", "haven't": "have not",
                 "hasn't": "has not", "wasn't": "was not", "you've": "you have",
                 "we've": "we have", "they're": "they are", "didn't": "did not"}
_SYNONYMS = {"contact us": "get in touch with us", "purchase": "buy", "buy": "purchase",
             "receive": "get", "choose": "select", "select": "choose", "usually": "normally",
             "normally": "usually", "right away": "immediately", "immediately": "right away",
             "package": "parcel", "parcel": "package", "begin": "start", "starts": "begins",
             "business days": "working days", "sign in": "log in", "about": "around",
             "email us": "send us an email", "check": "look at", "quickly": "fast",
             "automatically": "without you doing anything", "each": "every", "every": "each"}
_POLITE_PREFIX = re.compile(r"^(?:Yes|No|Sure|Sorry|Good news|Just|Please|Of course)[,:!]?\s+",
                            re.IGNORECASE)
_COURTESY = ("Good news: ", "Sure, ", "Happily, ", "To answer that, ", "In short, ")
_LEADING_CONDITION = re.compile(
    r"^(?P<cond>(?:If|When|Once|Unless|Within|As long as|After|Before|Until|For)\b[^,;]{3,90}),"
    r"\s+(?P<main>[^;]+?)(?P<end>[.!?]?)$")


def _case_like(word: str, model: str) -> str:
    return word[:1].upper() + word[1:] if model[:1].isupper() else word


def _replace_word(sentence: str, old: str, new: str, rng: random.Random) -> str | None:
    """``old`` (a whole word or phrase) replaced by ``new`` at one of its places, or None."""
    spots = list(re.finditer(rf"(?<![\w'-]){re.escape(old)}(?![\w'-])", sentence, re.IGNORECASE))
    if not spots:
        return None
    spot = rng.choice(spots)
    return sentence[:spot.start()] + _case_like(new, spot.group()) + sentence[spot.end():]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def rewrite(sentence: str, rng: random.Random) -> str | None:
    """One meaning-preserving rewrite of ``sentence`` (None when no rule applies)."""
    options: list[Callable[[], str | None]] = []
    for short, long in _CONTRACTIONS.items():
        if _mentions(short, sentence.lower()):
            options.append(lambda s=short, lg=long: _replace_word(sentence, s, lg, rng))
        if _mentions(long, sentence.lower()):
            options.append(lambda s=short, lg=long: _replace_word(sentence, lg, s, rng))
    for old, new in _SYNONYMS.items():
        if _mentions(old, sentence.lower()):
            options.append(lambda o=old, n=new: _replace_word(sentence, o, n, rng))
    if _POLITE_PREFIX.match(sentence):
        options.append(lambda: _capitalise(_POLITE_PREFIX.sub("", sentence, count=1)))
    elif not sentence.startswith(("If ", "When ")):
        options.append(lambda: rng.choice(_COURTESY) + sentence[:1].lower() + sentence[1:]
                       if not sentence[:2].isupper() else None)
    if (m := _LEADING_CONDITION.match(sentence)) and not m.group("main")[:2].isupper():
        # "If A, B." -> "B if A.": the condition moves, it is not dropped.
        options.append(lambda: _capitalise(m.group("main")) + " " +
                       m.group("cond")[:1].lower() + m.group("cond")[1:] + (m.group("end") or "."))
    rng.shuffle(options)
    for option in options:
        out = option()
        if out and out != sentence:
            return out
    return None


_CLAUSE_SPLIT = re.compile(r";\s+|,\s+and\s+(?=(?:we|you|it|they|your|our|the|each)\b)")


def part(sentence: str, rng: random.Random) -> str | None:
    """One independent clause of a compound sentence on its own (a weaker, entailed claim)."""
    pieces = [p.strip(" ,") for p in _CLAUSE_SPLIT.split(sentence)]
    pieces = [p for p in pieces if len(content_words(p)) >= MIN_CLAIM_WORDS]
    if len(pieces) < 2:
        return None
    piece = rng.choice(pieces)
    return _capitalise(piece.rstrip(".!?")) + "."


# --- perturbations ---------------------------------------------------------------------------

_NEGATIONS: tuple[tuple[str, str], ...] = (
    (r"\bcan't\b", "can"), (r"\bcannot\b", "can"), (r"\bcan\b(?!'t)", "can't"),
    (r"\bdon't\b", "do"), (r"\bdo not\b", "do"), (r"\bdoesn't\b", "does"),
    (r"\bdoes not\b", "does"), (r"\bisn't\b", "is"), (r"\bis not\b", "is"),
    (r"\baren't\b", "are"), (r"\bwon't\b", "will"), (r"\bhaven't\b", "have"),
    (r"\bhasn't\b", "has"), (r"\bwasn't\b", "was"), (r"\bnever\b", "always"),
    (r"\balways\b", "never"), (r"(?<![-\w])(?:is|are|will)(?!\w)", "{0} not"),
    (r"\bno\b(?= (?:[a-z]+ )?(?:fee|fees|cost|charge|restocking|extra|expiry|limit)\b)", "a"),
    (r"\b(?:we|you|they) (?:ship|accept|offer|sell|charge|refund|send|email|add|give|match|"
     r"cover|deduct|collect|include|need|get|earn|pay|receive|keep|have to)\b", "{neg}"),
    (r"\b(?:requires|includes|covers|expires|applies|counts|ships|arrives|needs)\b", "{3rd}"),
)


def negate(sentence: str, rng: random.Random) -> str | None:
    """The sentence with one negation added or removed."""
    spots = [(m, new) for pattern, new in _NEGATIONS
             for m in re.finditer(pattern, sentence, re.IGNORECASE)]
    if not spots:
        return None
    match, new = rng.choice(spots)
    old = match.group()
    if new == "{0} not":
        new = f"{old} not"
    elif new == "{neg}":
        subject, verb = old.split(" ", 1)
        new = f"{subject} don't {verb}"
    elif new == "{3rd}":
        new = f"doesn't {old[:-2] if old.endswith(('ches', 'shes')) else old[:-1]}"
    return sentence[:match.start()] + _case_like(new, old) + sentence[match.end():]


def _other_value(value: str, pool: Sequence[str], rng: random.Random) -> str:
    others = [v for v in pool if v != value]
    if others:
        return rng.choice(others)
    number = float(value.replace(",", ""))
    changed = number * rng.choice((2, 3)) if number < 10 else number + rng.choice((-1, 1)) * (
        math.ceil(number * 0.3))
    return f"{changed:.2f}" if "." in value else str(int(changed))


def change_number(sentence: str, kind: str, vocabulary: Vocabulary, source: str,
                  rng: random.Random) -> str | None:
    """A ``number``, ``price`` or ``duration`` of the sentence changed: to another value of the
    same kind, from the same source half of the time (a swap the lexical check cannot see),
    else from the knowledge base; a duration may change its unit instead."""
    matches = [m for m in _NUMBER.finditer(sentence) if _number_kind(m).startswith(kind + ":")]
    if not matches:
        return None
    match = rng.choice(matches)
    number_kind = _number_kind(match)
    unit = (match.group("unit") or "").strip()
    if kind == "duration" and rng.random() < 0.3:
        singular = unit.removesuffix("s")
        other = _TIME_UNITS[singular]
        new_unit = other + ("s" if unit.endswith("s") else "")
        text = match.group().replace(unit, new_unit)
    else:
        local = [m.group("num") for m in _NUMBER.finditer(source)
                 if _number_kind(m) == number_kind]
        pool = local if rng.random() < 0.5 and len(set(local)) > 1 else \
            vocabulary.values.get(number_kind, [])
        text = match.group().replace(match.group("num"),
                                     _other_value(match.group("num"), pool, rng), 1)
    return sentence[:match.start()] + text + sentence[match.end():]


def swap_name(sentence: str, names: Sequence[str], rng: random.Random) -> str | None:
    """A place or entity of the sentence replaced by another one from ``names``."""
    present = [n for n in names if _mentions(n, sentence)]
    if not present:
        return None
    old = rng.choice(present)
    # "US" inside "the US": replace the longer name, never a part of it by itself.
    if any(old != n and old in n and _mentions(n, sentence) for n in present):
        return None
    others = [n for n in names if n != old and n not in old and old not in n]
    new = rng.choice(others)
    spot = next(re.finditer(rf"(?<![\w-]){re.escape(old)}(?![\w-])", sentence))
    return sentence[:spot.start()] + new + sentence[spot.end():]


_CONDITIONS = (
    # "Orders over $500 require ..." -> "Orders require ..."
    re.compile(r"(?:(?<=\borders)|(?<=\border)|(?<=\bitems)|(?<=\bitem)|(?<=\bpurchases)|"
               r"(?<=\bpurchase)|(?<=\brefunds)|(?<=\brefund))\s+"
               r"(?:over|above|under|from|of|below|up to)\s+(?:C\$|\$|€)[\d,.]+"
               r"(?:\s+(?:or more|and up|or less))?",
               re.IGNORECASE),
    re.compile(r",?\s+(?:on|for) (?:US |EU |Canadian )?orders (?:of|over|from|above|under) "
               r"[^,;.]+", re.IGNORECASE),
    re.compile(r",?\s+(?:unless|except|excluding|as long as|provided|only if|if|once|when|"
               r"until)\b[^;.]+", re.IGNORECASE),
    re.compile(r",?\s+within \d+[^,;.]*", re.IGNORECASE),
    re.compile(r"\bPinecrest-brand\s+"),
)


# An instruction left without its condition ("If you'll be out, use the tracking link" -> "Use
# the tracking link") usually still holds: such drops would be faithful pairs labelled perturbed.
_IMPERATIVE = re.compile(
    r"^(?:(?:Good news|Sure|Happily|To answer that|In short|Yes|No|Please)[,:!]?\s+)*(?:contact|"
    r"use|choose|select|go|call|email|update|tap|click|check|look|start|sign|add|reset|wait|"
    r"reply|open|visit|enter|send|ask|apply|print|pack|drop|follow|allow|try|return|place|see|"
    r"let|keep|find|measure|put|pick|turn|make|remember|read|download|log|chat|message|"
    r"include|bring|write|fill|tell|share|take|leave|hand|just)\b", re.IGNORECASE)


def drop_condition(sentence: str, rng: random.Random) -> str | None:
    """The sentence without one of its conditions (a leading "If ...," clause, a trailing
    "unless/if/within ..." clause, an "over $500" on the thing it restricts); not for an
    instruction, which usually still holds without its condition."""
    options: list[str] = []
    if (m := _LEADING_CONDITION.match(sentence)) and not m.group("cond").startswith("For "):
        options.append(_capitalise(m.group("main")) + (m.group("end") or "."))
    for pattern in _CONDITIONS:
        for match in pattern.finditer(sentence):
            if match.start() == 0:
                continue
            out = (sentence[:match.start()] + sentence[match.end():]).strip()
            out = re.sub(r"\s+([,;.])", r"\1", out)
            options.append(re.sub(r"[,;]+([.!?])$", r"\1", out))
    options = [o for o in options if o != sentence and not _IMPERATIVE.match(o)
               and len(content_words(o)) >= MIN_CLAIM_WORDS]
    return rng.choice(options) if options else None


# --- pairs ---------------------------------------------------------------------------------------


def claim_sentences(text: str) -> list[str]:
    """The sentences of ``text`` that make a claim (tables, list numbers and lead-ins out)."""
    return [s for s in sentences(text)
            if len(content_words(s)) >= MIN_CLAIM_WORDS and not s.startswith("|")
            and not s.rstrip().endswith(":")]


def _neighbour_of(doc: Document, pool: Sequence[Document]) -> Document | None:
    """The other document of ``pool`` whose answer shares the most content words (tf-idf)."""
    own = set(content_words(doc.answer))
    best, best_score = None, 0.0
    for other in pool:
        if other.record_id == doc.record_id:
            continue
        words = set(content_words(other.answer))
        score = len(own & words) / math.sqrt(len(own) * len(words) or 1)
        if score > best_score:
            best, best_score = other, score
    return best


def _not_restated(sentence: str, source: str) -> bool:
    """A sentence of another FAQ that this source does not already say (most of its content
    words absent from the source)."""
    words = content_words(sentence)
    vocabulary = set(content_words(source))
    return sum(w in vocabulary for w in words) / max(1, len(words)) < 0.7


def pairs_for(doc: Document, group: str, vocabulary: Vocabulary, neighbour: Document | None,
              rng: random.Random, condition_draws: int = 1) -> Iterator[Pair]:
    """Faithful and perturbed pairs for every claim sentence of ``doc``'s answer;
    ``condition_draws`` > 1 adds more dropped conditions (the hardest kind) for training."""
    source = doc.answer
    foreign = [s for s in claim_sentences(neighbour.answer) if _not_restated(s, source)] \
        if neighbour is not None else []
    for sentence in claim_sentences(source):
        yield Pair(source, sentence, 1, "same", group)
        for _ in range(2):
            if (text := rewrite(sentence, rng)) is not None:
                yield Pair(source, text, 1, "rewrite", group)
        if (text := part(sentence, rng)) is not None:
            yield Pair(source, text, 1, "part", group)
        # Perturb the sentence or a rewrite of it: meaning, not wording, must decide.
        base = sentence
        if rng.random() < 0.5:
            base = rewrite(sentence, rng) or sentence
        perturbed = {
            "negation": negate(base, rng),
            "number": change_number(base, "number", vocabulary, source, rng),
            "price": change_number(base, "price", vocabulary, source, rng),
            "duration": change_number(base, "duration", vocabulary, source, rng),
            "place": swap_name(base, vocabulary.places, rng),
            "entity": swap_name(base, vocabulary.entities, rng),
            "condition": drop_condition(base, rng),
        }
        for kind, text in perturbed.items():
            if text is not None and text != base:
                yield Pair(source, text, 0, kind, group)
        for _ in range(condition_draws - 1):
            if (text := drop_condition(rewrite(sentence, rng) or sentence, rng)) is not None:
                yield Pair(source, text, 0, "condition", group)
        if foreign:
            yield Pair(source, rng.choice(foreign), 0, "neighbour", group)


# --- splits and files --------------------------------------------------------------------------


def _in_heldout(record_id: str, fraction: float) -> bool:
    return int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def split_groups(documents: Sequence[Document], heldout_fraction: float
                 ) -> tuple[list[Document], list[Document]]:
    """(training documents, held-out FAQs): FAQs by a hash of their id; a past dialogue goes
    to training only when the FAQ its agent turn is closest to is a training FAQ (so no
    held-out FAQ's facts reach training through a dialogue that restates them)."""
    faqs = [d for d in documents if d.kind == "faq"]
    held = [d for d in faqs if _in_heldout(d.record_id, heldout_fraction)]
    held_ids = {d.record_id for d in held}
    train = [d for d in faqs if d.record_id not in held_ids]
    for doc in documents:
        if doc.kind != "faq" and claim_sentences(doc.answer):
            nearest = _neighbour_of(doc, faqs)
            if nearest is None or nearest.record_id not in held_ids:
                train.append(doc)
    return train, held


def build_pairs(documents: Sequence[Document], vocabulary: Vocabulary, seed: int,
                rounds: int = 1, condition_draws: int = 1) -> list[Pair]:
    """Pairs for every document; neighbours come from the same documents (the same split).
    ``rounds`` > 1 draws more rewrites and perturbations of the same sentences."""
    faqs = [d for d in documents if d.kind == "faq"]
    out: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for round_ in range(rounds):
        rng = random.Random(f"{seed}-{round_}")
        for doc in documents:
            group = doc.record_id.split("#", 1)[0]
            for pair in pairs_for(doc, group, vocabulary, _neighbour_of(doc, faqs), rng,
                                  condition_draws):
                if (pair.source, pair.sentence) not in seen:
                    seen.add((pair.source, pair.sentence))
                    out.append(pair)
    return out


def heldout_pairs(documents: Sequence[Document], heldout_fraction: float = 0.3,
                  seed: int = 0, rounds: int = 3) -> list[Pair]:
    """The held-out perturbation set: pairs of the held-out FAQs only (three draws of rewrites
    and perturbations per sentence by default, for enough pairs of each kind)."""
    vocabulary = Vocabulary.from_texts([d.answer for d in documents])
    return build_pairs(split_groups(documents, heldout_fraction)[1], vocabulary, seed, rounds)


def write_pairs(pairs: Sequence[Pair], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(asdict(pair), ensure_ascii=False) + "\n")


def read_pairs(path: Path) -> list[Pair]:
    with path.open(encoding="utf-8") as handle:
        return [Pair(**json.loads(line)) for line in handle if line.strip()]


def counts(pairs: Sequence[Pair]) -> dict[str, int]:
    return dict(sorted(Counter(p.kind for p in pairs).items()))
