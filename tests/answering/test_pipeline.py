"""The pipeline's stage order and contract, with stand-in stages passed through the factory, a
tiny real LM end to end, and one run on a real index of the tiny knowledge base."""

from __future__ import annotations

from pathlib import Path

import pytest
from standin_stages import (
    DIALOGUE,
    RETURNS,
    SHIPPING,
    StandInGenerator,
    StandInRetriever,
    doc,
    hit,
)
from tiny_lm import tiny_lm_dir  # noqa: F401  (session fixture)

from chatbot.answering import prompt
from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.errors import InvalidRequestError
from chatbot.generation.local import TransformersGenerator
from chatbot.types import Reply, Route, Turn

THRESHOLDS = {"answer": 0.6, "faq": 0.85, "support": 0.5, "source": "test"}
QUESTIONS = {
    "how long is shipping": [hit(SHIPPING, 0.93), hit(RETURNS, 0.4, 2)],
    "when will my parcel come": [hit(SHIPPING, 0.72), hit(DIALOGUE, 0.6, 2), hit(RETURNS, 0.3, 3)],
    "weather in bend?": [hit(RETURNS, 0.21)],
}


def _pipeline(settings: Settings, generator: StandInGenerator | None = None):  # type: ignore[no-untyped-def]
    retriever = StandInRetriever(QUESTIONS, THRESHOLDS)
    generator = generator or StandInGenerator("Standard shipping takes 3-5 business days [1].")
    return build_pipeline(settings, retriever=retriever, generator=generator), retriever, generator


def _run(pipeline, question: str, history=()):  # type: ignore[no-untyped-def]
    items = list(pipeline.stream(question, history))
    assert isinstance(items[-1], Reply)
    assert all(isinstance(i, str) for i in items[:-1])
    return items[:-1], items[-1]


def test_faq_fast_path_answers_verbatim_without_loading_the_generator(settings: Settings) -> None:
    pipeline, retriever, generator = _pipeline(settings)
    deltas, reply = _run(pipeline, "how long is shipping")
    assert reply.route == Route.FAQ and reply.text == SHIPPING.answer == "".join(deltas)
    assert reply.sources[0].document is SHIPPING and len(reply.hits) == 2
    assert reply.index_version == "v-test" and reply.model is None
    assert generator.loads == 0 and not generator.prompts
    assert retriever.searches == [("how long is shipping", ())]


def test_grounded_generation_streams_deltas_then_one_reply(settings: Settings) -> None:
    pipeline, _, generator = _pipeline(settings)
    history = (Turn("customer", "hi"), Turn("agent", "Hello! How can I help?", "fallback"))
    deltas, reply = _run(pipeline, "when will my parcel come", history)
    assert reply.route == Route.GENERATED
    assert "".join(deltas) == reply.text == "Standard shipping takes 3-5 business days [1]."
    assert [s.document for s in reply.sources] == [SHIPPING]  # the cited source
    assert reply.model == "standin-gen" and reply.extra["tokens"] > 0
    sent = generator.prompts[0]
    assert sent[0]["content"] == prompt.SYSTEM_PROMPT
    assert sent[1] == {"role": "user", "content": "hi"}
    assert "[1] Q: How long does standard shipping take?" in sent[-1]["content"]
    assert sent[-1]["content"].endswith("Customer: when will my parcel come")


def test_past_dialogues_in_the_prompt_lose_the_configured_patterns_too(
        settings: Settings) -> None:
    # CHATBOT_REDACT_PATTERNS promises prompts redacted: not only cards, emails and phones.
    dialogue = doc("dlg-0007#0", "my account ACC-12345678 is locked, mail me at jo@example.com",
                   "Unlocked ACC-12345678 for you.", kind="dialogue")
    configured = settings.model_copy(update={"redact_patterns": {"account": r"ACC-\d{8}"}})
    generator = StandInGenerator("Sure.")
    pipeline = build_pipeline(configured, generator=generator, retriever=StandInRetriever(
        {"my account is locked": [hit(dialogue, 0.7)]}, THRESHOLDS))
    pipeline.answer("my account is locked")
    sources = generator.prompts[0][-1]["content"]
    assert "Customer: my account [account] is locked, mail me at [email]" in sources
    assert "Agent: Unlocked [account] for you." in sources
    assert "ACC-12345678" not in sources and "jo@example.com" not in sources


def test_unsupported_generation_falls_back_and_stops_the_generator(settings: Settings) -> None:
    text = "Parcels are delivered by drone within 2 hours. " + "More invented text. " * 20
    pipeline, _, generator = _pipeline(settings, StandInGenerator(text))
    deltas, reply = _run(pipeline, "when will my parcel come")
    assert reply.route == Route.FALLBACK
    assert reply.text == prompt.UNSUPPORTED_TEXT == "".join(deltas)
    assert "not supported" in reply.reason and "drone" in reply.reason
    assert generator.cancelled >= 1 and generator.pieces_sent < len(text.split())


def test_answer_is_cut_before_the_first_unsupported_sentence(settings: Settings) -> None:
    text = ("Standard shipping takes 3-5 business days [1]. Express shipping is free for "
            "everyone on Mondays.")
    pipeline, _, _ = _pipeline(settings, StandInGenerator(text))
    deltas, reply = _run(pipeline, "when will my parcel come")
    assert reply.route == Route.GENERATED
    assert reply.text == "".join(deltas) == "Standard shipping takes 3-5 business days [1]."
    assert "cut before an unsupported sentence" in reply.reason


def test_generator_failure_becomes_an_honest_fallback(settings: Settings) -> None:
    pipeline, _, _ = _pipeline(settings, StandInGenerator(fail=True))
    reply = pipeline.answer("when will my parcel come")
    assert reply.route == Route.FALLBACK and "generator failed" in reply.reason


def test_weak_evidence_falls_back_and_then_hands_over(settings: Settings) -> None:
    pipeline, _, generator = _pipeline(settings)
    history: list[Turn] = []
    routes = []
    for _ in range(3):
        reply = pipeline.answer("weather in bend?", history)
        routes.append(reply.route)
        history += [Turn("customer", "weather in bend?"),
                    Turn("agent", reply.text, reply.route.value)]
    assert routes == [Route.FALLBACK, Route.FALLBACK, Route.HANDOFF]
    assert generator.loads == 0


def test_asking_for_a_human_hands_over(settings: Settings) -> None:
    pipeline, _, _ = _pipeline(settings)
    reply = pipeline.answer("can I speak to a human please")
    assert reply.route == Route.HANDOFF and reply.text == prompt.HANDOFF_TEXT
    assert reply.reason == "customer asked for a human"


@pytest.mark.parametrize("question", ["", "   \n"])
def test_empty_question_is_rejected(settings: Settings, question: str) -> None:
    pipeline, retriever, _ = _pipeline(settings)
    with pytest.raises(InvalidRequestError, match="empty"):
        pipeline.answer(question)
    with pytest.raises(InvalidRequestError):
        pipeline.stream(question)  # raised on the call, before any streaming starts
    assert retriever.searches == []


def test_too_long_question_is_rejected(settings: Settings) -> None:
    pipeline, _, _ = _pipeline(settings.model_copy(update={"max_message_chars": 50}))
    with pytest.raises(InvalidRequestError, match="more than the 50 allowed") as info:
        pipeline.answer("x" * 51)
    assert info.value.field == "message"


def test_lifecycle_delegates_to_the_retriever(settings: Settings) -> None:
    pipeline, retriever, generator = _pipeline(settings)
    # Ready only once the generator is loaded too: the warm-up loads it, the check does not.
    assert not pipeline.ready() and pipeline.not_ready() == ["generator"]
    pipeline.warm_up()
    assert generator.loaded and pipeline.ready() and pipeline.index_version == "v-test"
    pipeline.reload()
    assert retriever.reloads == 1
    assert pipeline.thresholds().source == "test"


def test_tiny_real_model_end_to_end(settings: Settings, tiny_lm_dir: Path) -> None:  # noqa: F811
    s = settings.model_copy(update={"generator_model": str(tiny_lm_dir),
                                    "generator_adapter": "none", "torch_threads": 1,
                                    "max_new_tokens": 24})
    generator = TransformersGenerator(s)
    pipeline = build_pipeline(s, retriever=StandInRetriever(QUESTIONS, THRESHOLDS),
                              generator=generator)
    assert pipeline.answer("how long is shipping").route == Route.FAQ
    assert not generator.loaded  # the FAQ path never loads the model
    deltas, reply = _run(pipeline, "when will my parcel come")
    assert generator.loaded
    # Random weights write gibberish: the support gate must refuse to send it.
    assert reply.route == Route.FALLBACK and reply.text == "".join(deltas)
    assert reply.model == generator.name


def test_real_index_answers_an_faq_verbatim(settings: Settings) -> None:
    from chatbot.retrieval.index import reindex

    reindex(settings, progress=False)
    pipeline = build_pipeline(settings, generator=StandInGenerator("unused"))
    assert pipeline.not_ready() == ["embedder", "generator"]  # the index loads on the check
    pipeline.warm_up()
    assert pipeline.ready()
    reply = pipeline.answer("How do I reset my password?")
    assert reply.route == Route.FAQ
    assert reply.sources[0].document.record_id == "acc-001"
    assert reply.text.startswith("Click Forgot password")
    assert reply.index_version == pipeline.index_version is not None
    off_topic = pipeline.answer("what is the capital of Mongolia")
    assert off_topic.route == Route.FALLBACK


def test_terminal_chat_shows_route_confidence_and_sources(settings: Settings) -> None:
    from chatbot.answering.pipeline import terminal_chat

    pipeline, retriever, _ = _pipeline(settings)
    inputs = iter(["how long is shipping", "", "weather in bend?", "quit"])
    out: list[str] = []
    terminal_chat(pipeline, lambda _prompt: next(inputs), out.append)
    text = "\n".join(out)
    assert SHIPPING.answer in text and "[faq · confidence 0.93" in text
    assert "[1] faq ship-001: How long does standard shipping take?" in text
    assert "(the message is empty: type a question)" in text
    assert "[fallback · confidence 0.21" in text
    # The second real question carried the first exchange as history.
    assert retriever.searches[1][1][0] == Turn("customer", "how long is shipping")


def test_a_caller_that_stops_reading_stops_the_generator(settings: Settings) -> None:
    text = "Standard shipping takes 3-5 business days [1]. " * 30
    pipeline, _, generator = _pipeline(settings, StandInGenerator(text))
    stream = pipeline.stream("when will my parcel come")
    assert next(stream).startswith("Standard shipping")
    stream.close()  # e.g. the browser went away
    assert generator.cancelled >= 1 and generator.pieces_sent < len(text.split())
