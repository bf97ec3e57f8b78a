"""Prompt text: every sentence the bot says on its own, and how a grounded prompt is built.

All wording lives here so product people can review it in one place, and so fine-tuning
(``chatbot.training.generator``) trains on exactly the prompt the server sends. A prompt is a
list of chat messages (``{"role": ..., "content": ...}``); the model's own chat template turns
it into tokens (``chatbot.generation.local.render``), so any instruct model works without code
changes. The ``[n]`` citation pattern (``CITATION``) is defined here once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from chatbot.answering.privacy import DEFAULT, Redactor
from chatbot.generation.base import Message
from chatbot.types import Hit, Turn

# --- the bot's own sentences -------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You are a customer-service assistant for an online store. Answer the customer's last "
    "message using only the numbered sources below. Cite every source you use as [n]. If the "
    "sources do not answer the question, say you are not sure and offer to connect the "
    "customer with a human agent. Be brief, friendly and specific."
)

FALLBACK_TEXT = (
    "I'm not sure I can answer that correctly, and I'd rather not guess. "
    "Would you like me to connect you with a member of our support team?"
)

# Used when retrieval found related material but the generated answer did not hold up.
UNSUPPORTED_TEXT = (
    "I found some related information but I'm not confident it answers your question. "
    "Would you like me to connect you with a member of our support team?"
)

# A hand-over's own sentences say nothing about WHEN a person answers: the conversation service
# adds one of the availability sentences below, chosen from the support hours and whether an
# agent is signed in (``chatbot.conversations.availability``), so the promise is always true.
# Nor do they promise that the person sees every word: the log they read has card numbers,
# emails and phone numbers redacted (``chatbot.answering.privacy``), so the texts promise the
# conversation (the question need not be explained again), not "everything you wrote".
HANDOFF_TEXT = (
    "I'm passing your conversation to a member of our support team. They'll see this "
    "conversation, so you won't need to explain your question again."
)
HANDOFF_JOINING_TEXT = "A member of our team will join this chat shortly."  # agent signed in
HANDOFF_NOBODY_ONLINE_TEXT = (
    "No one from our team is online right now. Your conversation will be waiting, and a person "
    "will reply here as soon as someone is available."
)
HANDOFF_CLOSED_TEXT = (  # outside the support hours; {back} is e.g. "Monday at 8am"
    "Our team is available {hours}, so a person will reply here when we're back ({back}). "
    "Your conversation will be waiting."
)
# What a customer's message gets while a person has the conversation (the bot stays silent).
AGENT_HAS_IT_TEXT = "{agent} from our support team has your message and will reply here."

HANDOFF_AFTER_FALLBACKS_TEXT = (
    "I'm sorry I couldn't help with this. I'm passing your conversation to a member of our "
    "support team, who will pick it up from here."
)

# For a frustrated customer (``chatbot.answering.signals``). They are already contacting us, so
# these never say "contact us" or send them to email or the phone; they acknowledge, and offer a
# person straight away, without promising when the person will answer (nor, like the hand-over
# texts above, that the person sees every word).
FRUSTRATED_ACK = "I'm sorry this has been frustrating."  # before an answer the bot can give
FRUSTRATED_OFFER = (  # after that answer; "yes" or asking for a person hands over (policy)
    "If you'd rather sort this out with a person, just say so and I'll bring in a member of our "
    "support team; they'll see this conversation, so you won't need to explain it again."
)
# Instead of the fallback when the bot cannot answer a frustrated customer.
FRUSTRATED_TEXT = (
    "I'm sorry this has been frustrating, and I don't want to keep you going round in circles. "
    "Would you like me to bring in a member of our support team? They'll see this "
    "conversation, so you won't need to explain it again."
)
# A strongly frustrated customer is handed over at once, marked as a priority (agents' inbox
# lists high-priority hand-overs first).
FRUSTRATED_HANDOFF_TEXT = (
    "I'm sorry this has been so frustrating. I'm passing your conversation to a member of our "
    "support team as a priority; they'll see this conversation, so you won't need to explain "
    "it again."
)

# --- limits that keep the prompt short ----------------------------------------------------------
# Why these sizes: SmolLM2-135M decodes ~20 tokens/s on 2 cores and prefill cost grows with the
# prompt, so three sources of <= 600 characters (~150 tokens each) plus two exchanges of history
# keep a typical prompt near 300-500 tokens, i.e. a first token in well under a second.
MAX_SOURCES = 3
MAX_SOURCE_CHARS = 600
HISTORY_TURNS = 4  # last messages (customer + agent) shown to the model
MAX_TURN_CHARS = 300

# The one pattern of a citation marker, "[n]" with a 1-2 digit source number (group 1). The
# support check (``chatbot.answering.grounding``) builds its sentence boundary from it too.
CITATION = re.compile(r"\[(\d{1,2})\]")
# A marker with the space before it, so "days [1]." becomes "days.".
_SPACED_CITATION = re.compile(r"\s*" + CITATION.pattern)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + " ..."


def format_source(n: int, hit: Hit, redactor: Redactor = DEFAULT) -> str:
    """One numbered source: an FAQ as question/answer, a past dialogue turn as an exchange with
    its personal data redacted by ``redactor`` (card numbers, emails and phone numbers, and the
    configured patterns of ``Redactor.from_settings(settings, verbatim=False)``): the model
    could repeat them to today's customer (``chatbot.answering.privacy``)."""
    doc = hit.document
    if doc.kind == "dialogue":
        customer, agent = redactor.redact(doc.question), redactor.redact(doc.answer)
        body = f"Customer: {_clip(customer, 200)}\nAgent: {_clip(agent, MAX_SOURCE_CHARS)}"
    else:
        body = f"Q: {_clip(doc.question, 200)}\nA: {_clip(doc.answer, MAX_SOURCE_CHARS)}"
    return f"[{n}] {body}"


def format_sources(hits: Sequence[Hit], redactor: Redactor = DEFAULT) -> str:
    if not hits:
        return "(no sources found)"
    return "\n\n".join(format_source(i, h, redactor)
                       for i, h in enumerate(hits[:MAX_SOURCES], start=1))


def build_messages(
    question: str, sources: Sequence[Hit], history: Sequence[Turn] = (), *,
    redactor: Redactor = DEFAULT,
) -> list[Message]:
    """The grounded prompt: instructions, the last turns as chat messages, then the numbered
    sources (past dialogues redacted by ``redactor``: the built-in kinds unless the caller
    passes the settings' one) and the customer's question in the final user message."""
    messages: list[Message] = [{"role": "system", "content": SYSTEM_PROMPT}]
    recent = list(history)[-HISTORY_TURNS:] if HISTORY_TURNS else []
    # A chat template expects the conversation to start with the user; drop a leading agent turn.
    while recent and recent[0].role != "customer":
        recent.pop(0)
    for turn in recent:
        role = "user" if turn.role == "customer" else "assistant"
        messages.append({"role": role, "content": _clip(turn.text, MAX_TURN_CHARS)})
    user = f"Sources:\n{format_sources(sources, redactor)}\n\nCustomer: {question.strip()}"
    messages.append({"role": "user", "content": user})
    return messages


def cited_numbers(text: str, n_sources: int) -> list[int]:
    """The source numbers an answer cites, in order of first appearance, valid ones only."""
    seen: list[int] = []
    for match in CITATION.finditer(text):
        n = int(match.group(1))
        if 1 <= n <= n_sources and n not in seen:
            seen.append(n)
    return seen


def strip_citations(text: str) -> str:
    """The answer without its [n] markers (for comparing with references and sources)."""
    return _SPACED_CITATION.sub("", text).strip()
