"""The review queue on real SQLite and PostgreSQL with the real MiniLM retriever: suggestions
from resolved conversations, merging near-duplicates, linking to the FAQ that missed a phrasing,
approve, reject and edits, and approved knowledge in the index."""

from __future__ import annotations

from pathlib import Path

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from learning_log import GIFT_ANSWER, gift_wrap_conversation, write_conversation
from sqlalchemy import Engine

from chatbot.config import Settings
from chatbot.conversations.retention import delete_conversations
from chatbot.errors import ConflictError, IngestError, InvalidRequestError, NotFoundError
from chatbot.learning.knowledge import (
    approved_additions,
    reindex_from_settings,
    reindex_with_approved,
)
from chatbot.learning.suggestions import SuggestionQueue
from chatbot.retrieval.index import with_additions
from chatbot.retrieval.search import Retriever
from chatbot.types import Document

RETURN_ANSWER = ("Start a return from Orders in your account within 60 days, then print the "
                 "free label.")


@pytest.fixture
def queue(settings: Settings, migrated_engine: Engine,  # noqa: F811
          kb_retriever: Retriever) -> SuggestionQueue:
    return SuggestionQueue(settings, migrated_engine, kb_retriever)


def test_a_resolved_conversation_becomes_one_pending_suggestion(
        queue: SuggestionQueue, migrated_engine: Engine) -> None:  # noqa: F811
    conversation_id, ids = write_conversation(migrated_engine, gift_wrap_conversation())
    [made] = queue.suggest_from_conversation(conversation_id)
    s = queue.get(made)
    assert (s.status, s.count, s.linked_faq_id) == ("pending", 1, None)
    assert s.question == "Do you offer gift wrapping for presents?" and s.answer == GIFT_ANSWER
    assert [(x.conversation_id, x.message_id) for x in s.sources] == [(conversation_id, ids[0])]
    # Resolving the same conversation again adds nothing.
    assert queue.suggest_from_conversation(conversation_id) == []
    assert queue.get(made).count == 1 and queue.count(status="pending") == 1


def test_personal_data_never_reaches_a_suggestion(
        settings: Settings, migrated_engine: Engine,  # noqa: F811
        kb_retriever: Retriever) -> None:
    """Even with the log keeping everything verbatim, what could be served to every customer
    once approved (question, answer, sources) is redacted."""
    verbatim = settings.model_copy(update={"store_verbatim": ["all"]})
    queue = SuggestionQueue(verbatim, migrated_engine, kb_retriever)
    question = "Do you offer gift wrapping? my email is jane.doe@example.com"
    answer = GIFT_ANSWER + " I've noted it on card 4111 1111 1111 1111, Jane."
    conversation_id, _ = write_conversation(migrated_engine,
                                            gift_wrap_conversation(question, answer))
    [made] = queue.suggest_from_conversation(conversation_id)
    s = queue.get(made)
    assert s.question == "Do you offer gift wrapping? my email is [email]"
    assert s.answer == GIFT_ANSWER + " I've noted it on card [card], Jane."
    assert [(x.question, x.answer) for x in s.sources] == [(s.question, s.answer)]


def test_near_duplicates_merge_and_carry_a_count(queue: SuggestionQueue,
                                                  migrated_engine: Engine) -> None:  # noqa: F811
    first, _ = write_conversation(migrated_engine, gift_wrap_conversation())
    [gift] = queue.suggest_from_conversation(first)
    # A close rephrasing (cosine about 0.9) with another answer merges by the question ...
    second, _ = write_conversation(migrated_engine, gift_wrap_conversation(
        "do you have gift wrapping", "We do, for $5 an item."))
    assert queue.suggest_from_conversation(second) == [gift]
    # ... a loose one (cosine about 0.75) with the same answer merges by the answer ...
    third, _ = write_conversation(migrated_engine, gift_wrap_conversation(
        "can orders be gift wrapped"))
    assert queue.suggest_from_conversation(third) == [gift]
    # ... and another topic is a suggestion of its own.
    other, _ = write_conversation(migrated_engine, gift_wrap_conversation(
        "do you price match other stores",
        "We match the price of any US store that has the identical item in stock."))
    [price] = queue.suggest_from_conversation(other)
    assert price != gift
    merged = queue.get(gift)
    assert merged.count == 3 and merged.answer == GIFT_ANSWER  # the first answer stays
    assert merged.phrasings == ["Do you offer gift wrapping for presents?",
                                "do you have gift wrapping", "can orders be gift wrapped"]
    assert [s.id for s in queue.list(status="pending")] == [gift, price]  # most asked first


def test_a_phrasing_an_faq_missed_is_linked_to_it(queue: SuggestionQueue,
                                                   migrated_engine: Engine) -> None:  # noqa: F811
    # The agent gave the FAQ's answer in other words: the FAQ was right, its phrasings missed.
    by_answer, _ = write_conversation(migrated_engine, gift_wrap_conversation(
        "i bought the wrong size jacket and want my money back", RETURN_ANSWER))
    [made] = queue.suggest_from_conversation(by_answer)
    linked = queue.get(made)
    assert linked.linked_faq_id == "ret-001" and (linked.link_score or 0) >= 0.88
    assert linked.category == "returns"
    # A question almost worded like an FAQ is linked by the question.
    by_question, _ = write_conversation(migrated_engine, [
        ("customer", "how long does standard shipping take to arrive?"),
        ("bot", "Passing you to a person.", "handoff"),
        ("agent", "It is 3 to 5 business days.")])
    [made] = queue.suggest_from_conversation(by_question)
    assert queue.get(made).linked_faq_id == "ship-001"


def test_the_faq_a_customer_rated_down_is_never_the_link(queue: SuggestionQueue,
                                                          migrated_engine: Engine  # noqa: F811
                                                          ) -> None:
    conversation_id, _ = write_conversation(migrated_engine, [
        ("customer", "how long does standard shipping take to arrive?"),
        ("bot", "Standard shipping takes 3-5 business days.", "faq:ship-001-"),  # thumbs-down
        ("customer", "that's wrong, human please"), ("bot", "Passing you on.", "handoff"),
        ("agent", "Over the holidays standard shipping takes 7-10 business days, sorry.")])
    [made] = queue.suggest_from_conversation(conversation_id)
    s = queue.get(made)
    assert s.linked_faq_id is None and s.status == "pending"
    assert s.category == "shipping"  # still a good guess for the admin


def test_approve_reject_and_what_the_index_gets(queue: SuggestionQueue, settings: Settings,
                                                migrated_engine: Engine,  # noqa: F811
                                                embedder, kb_retriever: Retriever  # type: ignore[no-untyped-def]
                                                ) -> None:
    gift_conv, _ = write_conversation(migrated_engine, gift_wrap_conversation())
    [gift] = queue.suggest_from_conversation(gift_conv)
    again, _ = write_conversation(migrated_engine, gift_wrap_conversation(
        "do you have gift wrapping"))
    queue.suggest_from_conversation(again)
    refund_conv, _ = write_conversation(migrated_engine, gift_wrap_conversation(
        "i bought the wrong size jacket and want my money back", RETURN_ANSWER))
    [refund] = queue.suggest_from_conversation(refund_conv)
    assert approved_additions(migrated_engine).documents == ()

    approved = queue.approve(gift, answer=GIFT_ANSWER + " Gift receipts hide the price.",
                             category="gifts")
    assert (approved.status, approved.record_id) == ("approved", f"sug-{gift}")
    assert approved.approved_at is not None and approved.category == "gifts"
    with pytest.raises(ConflictError, match="already approved"):
        queue.approve(gift)
    merged = queue.approve(refund)
    assert (merged.status, merged.record_id) == ("merged_into_faq", "ret-001")

    additions = approved_additions(migrated_engine)
    [document] = additions.documents
    assert (document.record_id, document.kind, document.category) == (f"sug-{gift}", "faq",
                                                                       "gifts")
    assert document.question == "Do you offer gift wrapping for presents?"
    assert document.alternatives == ("do you have gift wrapping",)
    assert document.answer.endswith("Gift receipts hide the price.")
    assert additions.phrasings == {
        "ret-001": ("i bought the wrong size jacket and want my money back",)}

    report = reindex_with_approved(settings, engine=migrated_engine, embedder=embedder,
                                   progress=False)
    assert (report.added, report.changed, report.removed) == (1, 1, 0)
    assert report.embedded == 3  # only the new phrasings: content hashes, incremental
    kb_retriever.reload()
    top = kb_retriever.search("Is gift wrapping offered?")[0]
    assert top.document.record_id == f"sug-{gift}" and (top.dense_score or 0) > 0.86
    top = kb_retriever.search("i bought the wrong size jacket and want my money back")[0]
    assert top.document.record_id == "ret-001" and (top.dense_score or 0) > 0.99
    assert not reindex_with_approved(settings, engine=migrated_engine, embedder=embedder,
                                     progress=False).rebuilt

    withdrawn, was_served = queue.reject(gift)
    assert withdrawn.status == "rejected" and was_served and withdrawn.record_id is None
    assert approved_additions(migrated_engine).documents == ()
    with pytest.raises(ConflictError, match="already rejected"):
        queue.reject(gift)


def test_edits_are_checked(queue: SuggestionQueue, migrated_engine: Engine) -> None:  # noqa: F811
    conversation_id, _ = write_conversation(migrated_engine, gift_wrap_conversation())
    [made] = queue.suggest_from_conversation(conversation_id)
    with pytest.raises(InvalidRequestError, match="question is empty"):
        queue.update(made, question="  ")
    with pytest.raises(InvalidRequestError, match="control character"):
        queue.update(made, answer="Yes\x00")
    with pytest.raises(InvalidRequestError, match="no FAQ with id 'nope'"):
        queue.update(made, linked_faq_id="nope")
    edited = queue.update(made, question="Do you gift wrap orders?", category=" gifts ",
                          linked_faq_id="pay-001")
    assert (edited.question, edited.category, edited.linked_faq_id) == (
        "Do you gift wrap orders?", "gifts", "pay-001")
    assert edited.link_score is None  # the admin's link, not a measured one
    assert queue.update(made, linked_faq_id="").linked_faq_id is None
    with pytest.raises(NotFoundError):
        queue.get(made + 100)
    with pytest.raises(InvalidRequestError, match="status must be one of"):
        queue.list(status="done")
    queue.approve(made)
    with pytest.raises(ConflictError, match="only a pending one"):
        queue.update(made, linked_faq_id="pay-001")


def test_a_suggestion_goes_with_the_conversations_behind_it(
        queue: SuggestionQueue, migrated_engine: Engine) -> None:  # noqa: F811
    kept, _ = write_conversation(migrated_engine, gift_wrap_conversation())
    [approved] = queue.suggest_from_conversation(kept)
    queue.approve(approved)
    doomed, _ = write_conversation(migrated_engine, gift_wrap_conversation(
        "do you price match other stores",
        "We match the price of any US store that has the identical item in stock."))
    [pending] = queue.suggest_from_conversation(doomed)
    with migrated_engine.begin() as connection:
        delete_conversations(connection, [kept, doomed])
    assert queue.count() == 1  # the pending one went with its only conversation
    assert queue.get(approved).sources == []  # the approved entry is the admin's and stays
    with pytest.raises(NotFoundError):
        queue.get(pending)


def test_extra_knowledge_cannot_take_a_files_record_id() -> None:
    faq = Document(id="x", record_id="ship-001", kind="faq", question="q", answer="a")
    with pytest.raises(IngestError, match="record id ship-001 is defined twice"):
        with_additions([faq], [faq])
    [only] = with_additions([faq], (), {"ship-001": ["Q", "new way to ask", ""], "gone": ["x"]})
    assert only.alternatives == ("new way to ask",) and only.id != faq.id


def test_the_cli_reindex_reads_the_settings_database(settings: Settings, database_url: str,  # noqa: F811
                                                     migrated_engine: Engine,  # noqa: F811
                                                     kb_retriever: Retriever, embedder  # type: ignore[no-untyped-def]
                                                     ) -> None:
    queue = SuggestionQueue(settings, migrated_engine, kb_retriever)
    conversation_id, _ = write_conversation(migrated_engine, gift_wrap_conversation())
    [made] = queue.suggest_from_conversation(conversation_id)
    queue.approve(made)
    with_db = settings.model_copy(update={"database_url": database_url})
    report = reindex_from_settings(with_db, embedder=embedder, progress=False)
    assert report.added == 1
    # A SQLite file that does not exist yet holds no approvals, and is not created.
    missing = Path(settings.var_dir) / "none.db"
    no_db = settings.model_copy(update={"database_url": f"sqlite:///{missing}"})
    assert reindex_from_settings(no_db, embedder=embedder, progress=False).removed == 1
    assert not missing.exists()
