"""Signals on every customer message: sentiment, frustration, and the cues behind them.

``SignalReader.read(message, history)`` returns ``Signals`` (``chatbot.types``, so replies and
the policy carry them without importing this module): VADER's compound sentiment (-1..1),
a frustration score (0..1), whether it crosses the frustration and strong-frustration
thresholds, and the names of the cues that fired (for the policy's reason text and analytics).

Why not VADER alone: a general lexicon scores a calm "my tent pole arrived broken" as negative
(``broken``) and misses what makes support customers frustrated: asking the same thing again,
the bot failing turn after turn, demanding a manager, threatening a chargeback or a review,
long waits, shouting. Each of those is a cheap cue read from the message and the conversation;
a logistic formula combines them with VADER's negativity into the frustration score.

The weights and both thresholds are not hand-set: they are fitted on the dev split of
``bench/data/frustration.jsonl`` by ``bench/bench_signals.py --fit`` (see the constants below);
the test split of that file is only used for the reported numbers (bench/results/signals.md).

The reader owns no routing: what the policy does with ``Signals`` is the policy's business.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from typing import Any

from chatbot.answering.policy import asks_for_human, consecutive_fallbacks
from chatbot.errors import ModelError
from chatbot.retrieval.text import content_words
from chatbot.types import NO_SIGNALS, Route, Signals, Turn

# --- the fitted formulas -----------------------------------------------------------------------
# Two logistic formulas over the same cue values: how likely the customer is frustrated, and,
# for a frustrated one, how likely the frustration is strong (a threat to leave, dispute or
# review, a manager demanded, anger, insults, shouting). A frustrated customer can be certain
# and mild ("third time I'm asking"), so strength is not a higher cut on the first score.
#
# Not hand-set: the output of `.venv/bin/python bench/bench_signals.py --fit` on the dev split of
# bench/data/frustration.jsonl (146 messages, 49 frustrated, 14 strongly): L2-regularised
# logistic regressions (penalty chosen by 5-fold cross-validation on dev); FRUSTRATION_THRESHOLD
# is the score with the best out-of-fold F1 on dev among those escalating at most 5% of dev's
# calm complaints; STRONG_THRESHOLD the strong score with the best out-of-fold F1 for the dev
# items labelled strong. Results on the test split: bench/results/signals.md.
#
# One row per cue: (weight in the frustration formula, weight in the strong formula). The rows'
# order is ``FEATURES``, the order ``SignalReader.features`` returns the cue values in.
_FITTED: dict[str, tuple[float, float]] = {
    "negative_sentiment": (1.137, 0.0),
    "repeated": (0.0, 1.209),
    "says_repeated": (8.267, 0.0),
    "fallbacks": (2.92, 0.0),
    "asks_for_human": (0.671, 0.0),
    "asks_for_manager": (1.916, 0.0),
    "threat": (3.367, 5.274),
    "long_wait": (4.472, 0.651),
    "impatience": (2.56, 0.0),
    "unanswered": (4.463, 2.898),
    "shouting": (5.685, 4.227),
    "anger": (4.773, 2.003),
    "polite": (-4.128, -1.912),
}
BIAS = -2.997
FRUSTRATION_THRESHOLD = 0.292
STRONG_BIAS = -4.46
STRONG_THRESHOLD = 0.143

FEATURES = tuple(_FITTED)
WEIGHTS: dict[str, float] = {name: w for name, (w, _) in _FITTED.items()}
STRONG_WEIGHTS: dict[str, float] = {name: w for name, (_, w) in _FITTED.items()}
# The fit keeps every other weight >= 0: each cue is defined as evidence of frustration, and a
# negative weight on one would be noise of a small dev set. Courtesy is the cue against it.
AGAINST_FRUSTRATION = ("polite",)

# Two messages about the same thing share about a third of their content words or more (a
# definition of "the same question", not a fitted weight).
REPEAT_OVERLAP = 0.3
MAX_HISTORY_TURNS = 12  # earlier turns read for repetition and fallbacks; older ones add nothing
# Excitement ("love it!!", "AMAZING") shouts too: capitals and !! only count as shouting when
# VADER does not read the message as clearly positive.
POSITIVE_GATE = 0.5
NEGATIVE_CUE = -0.05  # VADER's own convention for "negative"; only names the cue


# --- cues ---------------------------------------------------------------------------------------
# Each pattern is a family of phrasings a general sentiment lexicon misses. They are written for
# English chat; their weights come from data, so a cue that misfires on calm messages (e.g. a
# week's wait stated politely) gets the weight it deserves rather than a veto.

_I_WILL = r"(?:i'?m|im|i am|i'?ll|ill|i will|going to|gonna)\s+(?:just\s+|now\s+|be\s+)?"
_NUMBER_WORD = (r"(?:\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
                r"a few|few|several|a couple of|couple of)")
_DURATION = (rf"{_NUMBER_WORD}\s+(?:more\s+|whole\s+|full\s+)?(?:business\s+)?"
             r"(?:days?|weeks?|months?|hours?|minutes?|mins?)\b")

_SAYS_REPEATED = re.compile(
    r"\bhow many times\b"
    r"|\b(?:third|fourth|fifth|3rd|4th|5th|nth)\s+(?:time|try|attempt|email|message|request|"
    r"call)\b"
    r"|\b(?:asked|asking|told|explained|emailed|called|wrote|written|tried|contacted|"
    r"messaged)\b[^.?!]{0,25}\b(?:twice|\d+ times|(?:two|three|four|five|several|many|"
    r"multiple) (?:times|different ways))\b"
    r"|\b(?:already|keep|kept|keeps)\s+(?:asked|asking|told|telling|said|saying|explained|"
    r"explaining|filed|sent|sending|returned|tried|repeating|getting|giving|pasting)\b"
    r"|\bas i (?:said|told you|mentioned|already|explained)\b"
    r"|\b(?:the )?same (?:question|answer|thing|reply|response|canned)\b"
    r"|\bnot what i (?:asked|said|meant)\b"
    r"|\b(?:didn'?t|did not|don'?t|do not|even) (?:answer|read|reading|understand|listen)\w*\b"
    r"|\bread my (?:question|message)"
    r"|\b(?:ask|asked|asking|tell|told|telling|explain|repeat|sent|sending|pasted|pasting)\s+"
    r"(?:you\s+|me\s+|this\s+|it\s+|that\s+|the same(?: thing)?\s+)?again\b"
    r"|\bone more (?:try|time)\b|\bin circles\b|\bgoing round\b",
    re.IGNORECASE,
)
_MANAGER = re.compile(
    r"\b(?:manager|supervisor|someone in charge|your boss|escalat\w*|security (?:team|people))\b",
    re.IGNORECASE,
)
_THREAT = re.compile(
    r"\bcharge ?backs?\b"
    r"|\bdisput\w*\b[^.?!]{0,40}\b(?:bank|card|amex|visa|paypal|klarna|credit)\b"
    rf"|\b{_I_WILL}(?:disput|report|cancel|sue|leav\w* a review|writ\w* a review|post\w* a review)"
    r"|\bdisputing\b"
    r"|\b(?:call|calling|contact|contacting|reporting \w+ to)\s+(?:my|the)\s+(?:bank|credit card|"
    r"card company|card issuer)"
    r"|\b(?:1|one|zero)[- ]star\b|\b(?:bad|negative|terrible|honest) reviews?\b"
    r"|\bmy review\b[^.?!]{0,30}\b(?:going to|will|gonna)\b"
    r"|\b(?:bbb|better business bureau|trustpilot|yelp)\b"
    r"|\b(?:lawyer|attorney|small claims|legal action|consumer protection)\b"
    r"|\bnever\s+(?:again\s+)?(?:order|ordering|shop|shopping|buy|buying)\b"
    r"|\blast time i\b|\belsewhere\b|\b(?:buy|shop|order)\w*\s+(?:\w+\s+)?somewhere else\b"
    r"|\bdone with (?:you|this company|pinecrest)\b"
    r"|\bcancel\w*\b[^.?!]{0,40}\b(?:if|unless|or else)\b|\bcancel everything\b"
    r"|\brefus\w+ (?:the|your) (?:package|parcel|delivery)\b",
    re.IGNORECASE,
)
# A wait stated as a duration ("10 days ago", "been 3 weeks"): calm complaints say this too, so
# it is kept apart from impatience ("still no", "forever", "how much longer").
_LONG_WAIT = re.compile(
    r"\b(?:waiting|waited|wait|been|over|almost|nearly|took|taken|another|hold for)\s+"
    rf"(?:for\s+)?(?:over\s+|almost\s+|nearly\s+|about\s+)?{_DURATION}"
    rf"|\b{_DURATION}\s+(?:ago|now|later)\b"
    rf"|\b(?:sitting|stuck|sat|pending|processing)\b[^.?!]{{0,30}}\bfor\s+{_DURATION}"
    r"|\b(?:hasn'?t|hasnt|has not|not)\s+(?:moved|updated|changed|shipped|arrived)\s+"
    r"(?:in|for)\s+",
    re.IGNORECASE,
)
_IMPATIENCE = re.compile(
    r"\bstill\s+(?:waiting|no\b|not\b|nothing|hasn'?t|haven'?t|hasnt|havent|isn'?t|doesn'?t)"
    r"|\bfor (?:days|weeks|months|ages|hours)\b|\bforever\b|\btaking (?:so )?long\b"
    r"|\bhow (?:much )?longer\b|\b(?:and|but) (?:still|nothing|no)\b"
    r"|\b(?:not|stop|done|tired of|sick of)\s+(?:\w+\s+){0,3}?wait(?:ing)?\b",
    re.IGNORECASE,
)
_UNANSWERED = re.compile(
    r"\b(?:nobody|no one|no-one|noone|none of you)\b[^.?!]{0,30}\b(?:answer|respond|repl|call|"
    r"got back|get back|help|fix|tell|email|read)\w*"
    r"|\bno (?:reply|replies|response|responses|answer|answers|call ?back)\b"
    r"|\b(?:haven'?t|have not|havent) heard\b|\bheard nothing\b"
    r"|\bnot (?:a )?(?:single )?(?:reply|word|response)\b"
    r"|\bignor\w+\b|\bany(?:one|body) (?:there|actually|even|reading|reviewing|looking|"
    r"listening|checking|working|home)\b"
    r"|\b(?:promised|supposed to)\b[^.?!]{0,30}\b(?:call|email|reply|get back)"
    r"|\bnever (?:got|received|heard)\b[^.?!]{0,20}\b(?:reply|response|answer|back|call)",
    re.IGNORECASE,
)
# Anger, insults, profanity and giving up ("useless", "fed up", "forget it").
_ANGER = re.compile(
    r"\b(?:useless|ridiculous|absurd|pathetic|hopeless|joke|incompetent|scam\w*|rip-?off|theft|"
    r"thie(?:f|ves)|unacceptable|disgrace\w*|outrage\w*|appalling|shocking|unbelievable|unreal|"
    r"worst|fed up|had enough|enough is enough|furious|fuming|livid|angry|pissed|"
    r"infuriat\w*|frustrat\w*|annoy\w*|wtf|ffs|damn\w*|hell|crap\w*|shit\w*|bs|bullshit|"
    r"stupid|idiot\w*|dumb|clowns?|nonsense)\b"
    r"|\bsh\*t|\bf\*+\w*|\bfuck\w*"
    r"|\bsick (?:and tired )?of\b|\b(?:waste|wasting) (?:of )?(?:my )?time\b"
    r"|\bthanks for nothing\b|\bare you (?:kidding|serious|joking)\b|\bseriously\s*\?"
    r"|\byou people\b|\blos(?:e|ing) my patience\b|\bi'?m (?:so )?done\b|\bim (?:so )?done\b"
    r"|\bugh+\b|\bcome on\b|\bforget it\b|\bnever ?mind\b|\bi give up\b"
    r"|\b(?:not|isn'?t|wasn'?t|zero|no) (?:\w+ )?help(?:ful|ing)?\b",
    re.IGNORECASE,
)
# Capitals that are not shouting: carriers, product codes, places, units.
_ACRONYM_TEXT = (
    "UPS USPS DHL FEDEX GTX RDS DWR PFC EU US USA UK CA NV OR AK HI PR APO FPO DPO PO ET EST PST "
    "PT ID OK XS XL XXL XXXL LB LBS KG MM CM FAQ SMS PDF GPS LED ASAP VAT GST HST CAD USD EUR DE "
    "FR NL IE IOS REI QR AM PM TV PIN CVV RMA MSRP"
)
_ACRONYMS = frozenset(_ACRONYM_TEXT.split())
_FALLBACK = Route.FALLBACK.value
# Courtesy: calm complaints ask ("could you check?", "is that normal?"); expected to weigh
# against frustration. "thanks for nothing" is sarcasm, not courtesy.
_POLITE = re.compile(
    r"\b(?:could|would|can) you\b|\bplease\b|\bpls\b|\bthank you\b"
    r"|\bthanks?\b(?! for nothing)|\bsorry to\b|\bappreciate\b|\bi'?d like\b"
    r"|^\s*(?:hi|hello|hey|good (?:morning|afternoon|evening))\b"
    r"|\bis (?:that|this|it) normal\b|\bany (?:update|news)\b|\bwhen (?:should|can|will) i\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")
_PUNCT_RUN = re.compile(r"[!?]{2,}")


def _shouting(text: str) -> float:
    """0..1: mostly capitals or three capitalised words in a row (1.0), a capitalised word for
    emphasis (0.5), "!!" or "?!" (0.5)."""
    words = [w for w in _WORD.findall(text) if len(w.strip("'")) >= 2]
    shouted = [w.isupper() and w.strip("'") not in _ACRONYMS for w in words]
    caps = [w for w, s in zip(words, shouted, strict=True) if s]
    run = longest = 0
    for s in shouted:
        run = run + 1 if s else 0
        longest = max(longest, run)
    if (len(caps) >= 2 and len(caps) >= 0.6 * len(words)) or longest >= 3:
        score = 1.0
    elif any(len(w) >= 3 for w in caps):
        score = 0.5
    else:
        score = 0.0
    if _PUNCT_RUN.search(text):
        score += 0.5
    return min(score, 1.0)


def _dice(a: set[str], b: set[str]) -> float:
    return 2 * len(a & b) / (len(a) + len(b)) if a and b else 0.0


def repetition(message: str, history: Sequence[Turn]) -> float:
    """How often the message asks again what the bot could not answer: earlier customer turns
    followed by a fallback whose stemmed content words overlap the message's (Dice >=
    ``REPEAT_OVERLAP``), counted up to two (0, 0.5, 1). One rephrasing after a fallback is
    ordinary; the third time of asking is not. Turns the bot answered are not compared: asking
    on after an answer is a follow-up ("and for footwear?"). A rephrasing with no word in common
    is left to ``says_repeated``."""
    words = set(content_words(message))
    count = 0
    for i, turn in enumerate(history):
        if turn.role != "customer":
            continue
        reply = next((t for t in history[i + 1:] if t.role == "agent"), None)
        if (reply is not None and reply.route == _FALLBACK
                and _dice(words, set(content_words(turn.text))) >= REPEAT_OVERLAP):
            count += 1
    return min(count, 2) / 2


class SignalReader:
    """Reads ``Signals`` from a customer message and the conversation so far.

    The constructor only stores the thresholds; VADER's lexicon is loaded on the first
    ``read`` (about 20 ms) and shared by later calls (reading it is thread-safe)."""

    def __init__(self, *, threshold: float = FRUSTRATION_THRESHOLD,
                 strong_threshold: float = STRONG_THRESHOLD) -> None:
        if not (0.0 <= threshold <= 1.0 and 0.0 <= strong_threshold <= 1.0):
            raise ValueError(f"thresholds are scores in 0..1, got {threshold} and "
                             f"{strong_threshold}")
        self.threshold = threshold
        self.strong_threshold = strong_threshold
        self._vader: Any = None
        self._lock = threading.Lock()

    def _analyzer(self) -> Any:
        if self._vader is None:
            with self._lock:
                if self._vader is None:
                    try:
                        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
                    except ImportError as error:
                        raise ModelError(
                            "the VADER sentiment lexicon is missing: "
                            "`pip install vadersentiment`") from error
                    self._vader = SentimentIntensityAnalyzer()
        return self._vader

    def sentiment(self, text: str) -> float:
        """VADER's compound score of ``text``, -1..1."""
        return float(self._analyzer().polarity_scores(text)["compound"])

    def features(self, message: str, history: Sequence[Turn] = (),
                 sentiment: float | None = None) -> dict[str, float]:
        """The cue values (each 0..1) the formula weighs, by name in ``FEATURES`` order."""
        history = tuple(history)[-MAX_HISTORY_TURNS:]
        compound = self.sentiment(message) if sentiment is None else sentiment
        return {
            "negative_sentiment": max(0.0, -compound),
            "repeated": repetition(message, history),
            "says_repeated": float(bool(_SAYS_REPEATED.search(message))),
            "fallbacks": min(consecutive_fallbacks(history), 3) / 3,
            "asks_for_human": float(asks_for_human(message)),
            "asks_for_manager": float(bool(_MANAGER.search(message))),
            "threat": float(bool(_THREAT.search(message))),
            "long_wait": float(bool(_LONG_WAIT.search(message))),
            "impatience": float(bool(_IMPATIENCE.search(message))),
            "unanswered": float(bool(_UNANSWERED.search(message))),
            "shouting": _shouting(message) if compound < POSITIVE_GATE else 0.0,
            "anger": float(bool(_ANGER.search(message))),
            "polite": float(bool(_POLITE.search(message))),
        }

    def read(self, message: str, history: Sequence[Turn] = ()) -> Signals:
        """Signals of ``message`` given the earlier turns of its conversation (oldest first)."""
        if not message.strip():
            return NO_SIGNALS
        compound = self.sentiment(message)
        values = self.features(message, history, compound)
        frustration = score(values)
        frustrated = frustration >= self.threshold
        strong = frustrated and score(values, STRONG_WEIGHTS, STRONG_BIAS) >= self.strong_threshold
        # Every cue that fired is named, also one the fit gave no weight (analytics want to see
        # it); a faint negative tone is not a cue.
        pull = {n: WEIGHTS[n] * v for n, v in values.items() if v > 0}
        if compound > NEGATIVE_CUE:
            pull.pop("negative_sentiment", None)
        cues = tuple(sorted(pull, key=lambda n: -pull[n]))
        return Signals(sentiment=compound, frustration=frustration, frustrated=frustrated,
                       strongly_frustrated=strong, cues=cues)


def score(values: dict[str, float], weights: dict[str, float] | None = None,
          bias: float | None = None) -> float:
    """The logistic score of cue values: frustration with the fitted constants unless other
    weights are given (``STRONG_WEIGHTS`` for strong frustration)."""
    weights = WEIGHTS if weights is None else weights
    z = (BIAS if bias is None else bias) + sum(weights[n] * values[n] for n in FEATURES)
    return 1.0 / (1.0 + math.exp(-z))
