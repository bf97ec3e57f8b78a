"""Signals through the pipeline: read on every message (or taken from the caller), handed to
the policy, carried on the Reply; what streams is exactly the final text, acknowledgement and
offer included. Stand-in retriever and generator, the real SignalReader."""

from __future__ import annotations

from collections.abc import Sequence

from standin_stages import RETURNS, SHIPPING, StandInGenerator, StandInRetriever, hit

from chatbot.answering import prompt
from chatbot.answering.pipeline import Pipeline, build_pipeline
from chatbot.answering.signals import SignalReader
from chatbot.config import Settings
from chatbot.types import Reply, Route, Signals, Turn

THRESHOLDS = {"answer": 0.6, "faq": 0.85, "support": 0.5, "source": "test"}
ANSWER = "Standard shipping takes 3-5 business days [1]."
# The same retrieval for a calm and a frustrated phrasing of one question.
CALM_Q = "when will my parcel come"
UPSET_Q = "I already asked this, when will my parcel come"  # says_repeated: frustrated
STRONG_Q = "8 days and nothing. I'm cancelling and disputing the charge with my bank"
FAQ_Q = "Useless. how long is shipping"  # anger: frustrated, not strongly
OFF_TOPIC = "third time asking: weather in bend?"  # frustrated, nothing to answer with


def _pipeline(settings: Settings, text: str = ANSWER) -> tuple[Pipeline, StandInGenerator]:
    generated = [hit(SHIPPING, 0.72), hit(RETURNS, 0.3, 2)]
    retriever = StandInRetriever({
        CALM_Q: generated, UPSET_Q: generated, STRONG_Q: generated,
        FAQ_Q: [hit(SHIPPING, 0.93)], OFF_TOPIC: [hit(RETURNS, 0.2)],
    }, THRESHOLDS)
    generator = StandInGenerator(text)
    return build_pipeline(settings, retriever=retriever, generator=generator), generator


def _run(pipeline: Pipeline, question: str,
         signals: Signals | None = None) -> tuple[list[str], Reply]:
    items = list(pipeline.stream(question, (), signals))
    reply = items[-1]
    assert isinstance(reply, Reply) and all(isinstance(i, str) for i in items[:-1])
    deltas = [str(i) for i in items[:-1]]
    assert "".join(deltas) == reply.text  # what the customer saw is what is logged
    return deltas, reply


def test_every_reply_carries_the_signals_of_its_message(settings: Settings) -> None:
    pipeline, _ = _pipeline(settings)
    _, reply = _run(pipeline, CALM_Q)
    assert reply.route == Route.GENERATED and reply.text == ANSWER
    assert reply.signals is not None and not reply.signals.frustrated
    assert reply.priority == "normal"
    assert reply.signals == pipeline.read_signals(CALM_Q)


def test_a_frustrated_customer_sees_ack_answer_offer_streamed_as_logged(
        settings: Settings) -> None:
    pipeline, _ = _pipeline(settings)
    deltas, reply = _run(pipeline, UPSET_Q)
    assert reply.route == Route.GENERATED and reply.signals and reply.signals.frustrated
    assert reply.text == f"{prompt.FRUSTRATED_ACK} {ANSWER}\n\n{prompt.FRUSTRATED_OFFER}"
    # The acknowledgement comes first, the offer only after the gate released the answer.
    assert deltas[0] == prompt.FRUSTRATED_ACK + " "
    assert deltas[-1] == "\n\n" + prompt.FRUSTRATED_OFFER
    assert [s.document for s in reply.sources] == [SHIPPING]
    assert "customer frustrated" in reply.reason


def test_a_frustrated_faq_answer_is_framed_too(settings: Settings) -> None:
    pipeline, generator = _pipeline(settings)
    _, reply = _run(pipeline, FAQ_Q)
    assert reply.route == Route.FAQ and generator.loads == 0
    assert reply.text == (f"{prompt.FRUSTRATED_ACK} {SHIPPING.answer}\n\n"
                          f"{prompt.FRUSTRATED_OFFER}")


def test_a_rejected_answer_for_a_frustrated_customer_shows_no_stray_ack(
        settings: Settings) -> None:
    invented = "Parcels are delivered by drone within 2 hours. " * 3
    pipeline, _ = _pipeline(settings, invented)
    deltas, reply = _run(pipeline, UPSET_Q)
    assert reply.route == Route.FALLBACK and reply.text == prompt.FRUSTRATED_TEXT
    assert deltas == [prompt.FRUSTRATED_TEXT]  # the ack was never streamed ahead of it


def test_a_frustrated_customer_the_bot_cannot_help_is_offered_a_person(
        settings: Settings) -> None:
    pipeline, _ = _pipeline(settings)
    _, reply = _run(pipeline, OFF_TOPIC)
    assert reply.route == Route.FALLBACK and reply.text == prompt.FRUSTRATED_TEXT


def test_a_strongly_frustrated_customer_is_handed_over_at_once(settings: Settings) -> None:
    pipeline, generator = _pipeline(settings)
    _, reply = _run(pipeline, STRONG_Q)
    assert reply.route == Route.HANDOFF and reply.priority == "high"
    assert reply.text == prompt.FRUSTRATED_HANDOFF_TEXT
    assert reply.reason.startswith("customer strongly frustrated: frustration ")
    assert generator.loads == 0  # no answer was attempted


class CountingReader(SignalReader):
    """The real reader, counting the messages it reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self, message: str, history: Sequence[Turn] = ()) -> Signals:
        self.reads += 1
        return super().read(message, history)


def test_signals_given_by_the_caller_are_used_not_read_again(settings: Settings) -> None:
    pipeline, _ = _pipeline(settings)
    pipeline.signals = reader = CountingReader()
    given = Signals(sentiment=-0.9, frustration=0.99, frustrated=True, strongly_frustrated=True,
                    cues=("threat",))
    _, reply = _run(pipeline, CALM_Q, given)  # the words are calm; the caller's read is not
    assert reply.signals is given and reply.route == Route.HANDOFF
    assert reader.reads == 0
    _run(pipeline, CALM_Q)  # none given: read here, once
    assert reader.reads == 1


def test_signals_switched_off_leave_routing_as_it_was(settings: Settings) -> None:
    pipeline, _ = _pipeline(settings.model_copy(update={"signals": False}))
    assert pipeline.read_signals(STRONG_Q) is None
    _, reply = _run(pipeline, STRONG_Q)
    assert reply.route == Route.GENERATED and reply.text == ANSWER
    assert reply.signals is None and reply.priority == "normal"
