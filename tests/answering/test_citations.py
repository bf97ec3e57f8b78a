"""A customer sees FAQ sources only, and the [n] in the text they read point at those: citations
of a past dialogue are removed, the others renumbered, and the streamed text equals the final
text. The pipeline runs for real with stand-in retriever and generator."""

from __future__ import annotations

import pytest
from standin_stages import DIALOGUE, RETURNS, SHIPPING, StandInGenerator, StandInRetriever, hit

from chatbot.answering import prompt
from chatbot.answering.citations import CustomerCitations, visible_sources
from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.conversations.views import sources
from chatbot.types import Reply, Route

THRESHOLDS = {"answer": 0.6, "faq": 0.95, "support": 0.3, "source": "test"}
QUESTION = "my parcel is late, when does it come"
# The dialogue ranks first, so it is [1] in the prompt.
HITS = [hit(DIALOGUE, 0.9), hit(SHIPPING, 0.8, 2), hit(RETURNS, 0.7, 3)]


def _run(settings: Settings, text: str) -> tuple[list[str], Reply]:
    pipeline = build_pipeline(settings, retriever=StandInRetriever({QUESTION: HITS}, THRESHOLDS),
                              generator=StandInGenerator(text))
    items = list(pipeline.stream(QUESTION))
    reply = items[-1]
    assert isinstance(reply, Reply)
    return [i for i in items[:-1] if isinstance(i, str)], reply


@pytest.mark.parametrize("pieces, shown", [
    (["Late parcels are traced [1]."], "Late parcels are traced."),
    (["Standard shipping takes 3-5 days [2]."], "Standard shipping takes 3-5 days [1]."),
    (["Traced after 5 days [1][2].", " Returns within 60 days [3]."],
     "Traced after 5 days [1]. Returns within 60 days [2]."),
    (["[1] Sure.", " Shipping [2] [1] takes days [3]."], "Sure. Shipping [1] takes days [2]."),
    (["Returns [3].", " Shipping [2].", " Again [3]."], "Returns [1]. Shipping [2]. Again [1]."),
    (["A source that does not exist [7]."], "A source that does not exist."),
])
def test_citations_are_renumbered_for_the_faq_sources_and_dialogues_dropped(
        pieces: list[str], shown: str) -> None:
    whole = CustomerCitations(HITS)
    one_by_one = CustomerCitations(HITS)
    assert "".join(whole.rewrite(["".join(pieces)])) == shown
    assert "".join(one_by_one.rewrite(pieces)) == shown == one_by_one.text


def test_visible_sources_are_the_faq_hits_in_order() -> None:
    assert [h.document for h in visible_sources(HITS)] == [SHIPPING, RETURNS]


def test_a_generated_answer_citing_a_dialogue_shows_no_dialogue(settings: Settings) -> None:
    text = ("Late parcels are traced by the carrier after 5 business days [1]. Standard "
            "shipping takes 3-5 business days [2].")
    deltas, reply = _run(settings, text)
    assert reply.route == Route.GENERATED
    shown = ("Late parcels are traced by the carrier after 5 business days. Standard shipping "
             "takes 3-5 business days [1].")
    assert "".join(deltas) == reply.text == shown
    # The log keeps every cited hit (the admin sees the dialogue); the customer only the FAQ.
    assert [h.document for h in reply.sources] == [DIALOGUE, SHIPPING]
    listed = sources(reply)
    assert [(s.n, s.record_id, s.kind) for s in listed] == [(1, "ship-001", "faq")]
    dumped = str([s.model_dump() for s in listed])
    assert DIALOGUE.question not in dumped and DIALOGUE.answer not in dumped


def test_an_answer_citing_only_the_dialogue_lists_no_source(settings: Settings) -> None:
    deltas, reply = _run(settings, "Late parcels are traced by the carrier after 5 business "
                                   "days [1].")
    assert reply.route == Route.GENERATED
    assert "".join(deltas) == reply.text == ("Late parcels are traced by the carrier after 5 "
                                             "business days.")
    assert sources(reply) == []


def test_an_uncited_answer_lists_the_faq_sources_of_its_prompt(settings: Settings) -> None:
    _, reply = _run(settings, "Standard shipping takes 3-5 business days.")
    assert [s.record_id for s in sources(reply)] == ["ship-001", "ret-001"]
    assert [s.n for s in sources(reply)] == [1, 2]


def test_the_prompt_keeps_the_dialogue_but_without_personal_data() -> None:
    from standin_stages import doc

    dialogue = doc("dlg-0190#4", "i typed his email wrong, jakob.mills@exmaple.com",
                   "I've issued a new eGift card to jakob.mills@example.com; call 1-800-555-0142 "
                   "if it has not arrived.", kind="dialogue")
    block = prompt.format_source(1, hit(dialogue, 0.8))
    assert block == ("[1] Customer: i typed his email wrong, [email]\n"
                     "Agent: I've issued a new eGift card to [email]; call [phone] if it has not "
                     "arrived.")
    faq = prompt.format_source(2, hit(SHIPPING, 0.8))  # FAQ text is the company's, kept
    assert faq.startswith("[2] Q: How long does standard shipping take?")
