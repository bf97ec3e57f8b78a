"""The Gradio web UI: the customer chat tab, the agents' inbox tab and the admin tab.

Owns the page served at ``/``: streaming answers from ``ChatService.chat_stream`` with the
sources under each answer, thumbs up/down on answers (the Chatbot's like/dislike event), a
"Talk to a human" button, the inbox tab from ``ui.inbox`` and the admin tab from ``ui.admin``.
It talks only to ChatService, never to the database or the pipeline directly, so every answer
is logged like any other. After a hand-over a timer reads the conversation's live events
(``service.events``) and shows the support team's replies, labelled with the person's name, as
they arrive; the status line says who has the conversation, and only what is true: the hand-over
notice comes from the service (support hours, whether anyone is signed in). The timer runs only
while the conversation is handed over. Under the latest answer, up to ``CHIPS`` suggested
questions (the reply's ``suggestions``) are buttons: a click sends the question.

Sending a message, rating an answer and asking for a human count against the API's chat rate
limit (``app.state.limiter``, through ``ui.ratelimit``); over it the customer is asked to wait.
Customers see friendly sentences; stack traces go to the log only. Every text shown in a
Chatbot passes through ``ui.text`` first, so nothing a customer types is rendered as HTML.

``mount_ui(app, service, settings)`` is how ``chatbot.web.app.create_app`` mounts the page: since
Gradio 6 the theme and CSS are given when mounting, not to ``gr.Blocks``. The Improve tab
(``ui.improve``: suggested FAQs, content gaps) uses the app's learning loop
(``app.state.learning``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import gradio as gr

from chatbot.config import Settings
from chatbot.conversations.events import CUSTOMER_EVENTS
from chatbot.conversations.service import ChatResult, ChatService
from chatbot.conversations.views import sources
from chatbot.errors import ChatbotError, InvalidRequestError, NotFoundError
from chatbot.learning.loop import LearningLoop
from ui.admin import build_admin_tab
from ui.improve import build_improve_tab
from ui.inbox import build_inbox_tab
from ui.ratelimit import TOO_MANY, Limiter, over_limit, seconds
from ui.text import answer_markdown, bot_markdown, literal_markdown

log = logging.getLogger(__name__)

TITLE = "Customer support"
GREETING = "Hi! Ask me about orders, shipping, returns or your account."
SORRY = "Sorry, something went wrong on our side. Please try again in a moment."
UNAVAILABLE = (
    "The assistant is not available right now. Please try again in a minute, "
    "or use “Talk to a human”."
)
# The page keeps the conversation only while it is open, so the notices say so.
KEEP_OPEN = "Keep this page open to see their reply."
WAITING = "Your conversation is with our support team; a person will reply here. " + KEEP_OPEN
JOINED = "{agent} from our support team has joined the chat."
LEFT = "{agent} has handed the chat back to the assistant."
RESOLVED = "{agent} has marked this conversation resolved; the assistant answers from here."
AGENT_POLL_S = 2.0
ASK_FIRST = "Tell us briefly what you need first, then we'll pass it on to a person."
THANKS = "Thanks for your feedback!"

History = list[dict[str, Any]]
Ids = dict[int, str]  # chatbot message index -> logged bot message id (feedback targets it)
CHIPS = 3  # suggestion buttons under the chat (CHATBOT_SUGGESTIONS is at most this here)
Offered = list[tuple[str, str]]  # the suggestions on the chips: (faq_id, question), in order

CSS = """
.gradio-container { width: 100% !important; max-width: 980px !important;
  margin: 0 auto !important; }
#support-header h1 { margin-bottom: 0; }
#support-header p { margin-top: 4px; color: var(--body-text-color-subdued); }
#chat-actions { justify-content: flex-start; gap: 8px; }
#chat-actions button { flex: 0 0 auto; min-width: 0; }
.stat-cards { display: grid; grid-template-columns: repeat(3, 1fr); gap: 10px; }
@media (max-width: 600px) { .stat-cards { grid-template-columns: repeat(2, 1fr); } }
.stat-card { border: 1px solid var(--border-color-primary); border-radius: 10px;
  padding: 10px 14px; background: var(--block-background-fill); }
.stat-card .label { font-size: 12.5px; color: var(--body-text-color-subdued); }
.stat-card .value { font-size: 22px; font-weight: 650; }
"""


def theme() -> gr.themes.Base:
    """A calm green theme; fonts are the local ones Gradio ships (nothing from a CDN)."""
    return gr.themes.Soft(
        primary_hue="emerald", secondary_hue="green", neutral_hue="slate",
        font=("ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"),
    )


def customer_message(text: str) -> dict[str, Any]:
    return {"role": "user", "content": literal_markdown(text)}


def bot_message(markdown: str) -> dict[str, Any]:
    return {"role": "assistant", "content": markdown}


def notice(text: str) -> str:
    """Markdown for the status line under the chat (notices and errors; Gradio 6 does not
    display system messages, and a thumbs-up on an error message would make no sense)."""
    return f"**{bot_markdown(text)}**" if text else ""


def _customer_error(error: BaseException) -> str:
    """What a customer reads for an error; the details are in the log."""
    if isinstance(error, InvalidRequestError):
        return f"Sorry, I couldn't send that: {error}"
    if isinstance(error, ChatbotError):
        return UNAVAILABLE
    return SORRY


def agent_message(name: str, text: str) -> dict[str, Any]:
    """A support-team member's message: their name, then their words exactly as written."""
    label = literal_markdown(name or "Support team")
    return {"role": "assistant", "content": f"**{label}** (support team)  \n"
                                            f"{literal_markdown(text)}"}


def _chat_tab(service: ChatService, settings: Settings, limiter: Limiter | None = None) -> None:
    conversation_id = gr.State(None)
    message_ids = gr.State({})
    handed_off = gr.State(False)
    pending = gr.State("")
    last_event = gr.State(0)  # the id of the last live event shown (agent messages etc.)
    agent_timer = gr.Timer(AGENT_POLL_S, active=False)

    chatbot = gr.Chatbot(
        value=[],
        placeholder=bot_markdown(GREETING),
        label="Conversation",
        show_label=False,
        elem_id="support-chat",
        height=520,
        sanitize_html=True,
        allow_tags=False,
        render_markdown=True,
        latex_delimiters=[],
        feedback_options=("Like", "Dislike"),
        buttons=[],
        group_consecutive_messages=False,
    )
    status = gr.Markdown("", elem_id="chat-status")
    with gr.Row(equal_height=True):
        textbox = gr.Textbox(
            placeholder="Ask a question…",
            show_label=False,
            lines=1,
            max_lines=6,
            max_length=settings.max_message_chars,
            scale=8,
            autofocus=True,
            elem_id="support-input",
            submit_btn=False,
        )
        send = gr.Button("Send", variant="primary", scale=1, min_width=90, elem_id="support-send")
    # Suggested questions: the latest answer's, on buttons under the chat; a click sends the
    # question and logs the click (``suggestion=`` on the customer message).
    offered = gr.State([])  # Offered: what the chips show
    with gr.Row(elem_id="chat-suggestions"):
        chips = [gr.Button("", visible=False, size="sm", variant="secondary", min_width=120,
                           elem_classes=["suggestion-chip"]) for _ in range(CHIPS)]
    with gr.Row(elem_id="chat-actions"):
        human = gr.Button("Talk to a human", size="md", variant="secondary",
                          elem_id="support-human")
        restart = gr.Button("New conversation", size="md", variant="secondary")

    def add_customer(message: str, history: History) -> tuple[Any, History, str]:
        text = (message or "").strip()
        if not text:
            return gr.update(), history, ""
        return "", [*history, customer_message(text)], text

    def respond(
        message: str, history: History, conv_id: str | None, ids: Ids, off: bool,
        request: gr.Request, suggestion: str | None = None,
    ) -> Iterator[tuple[Any, ...]]:
        """Stream one answer. Yields (chatbot, conversation id, ids, hand-over, offered
        suggestions, status line, textbox)."""

        def out(chat: History, line: Any = None, box: Any = None,
                shown: Offered | None = None) -> tuple[Any, ...]:
            """The outputs as they stand; None leaves the status line, the textbox or the
            suggestions as they are."""
            kept = (gr.update() if value is None else value for value in (shown, line, box))
            return (chat, conv_id, ids, off, *kept)

        if not message:
            yield out(history)
            return
        # The same chat limit as the API; over it, the message goes back into the textbox.
        if (wait := over_limit(limiter, request)) is not None:
            yield out(history[:-1], notice(TOO_MANY.format(seconds=seconds(wait))), message)
            return
        history = [*history, bot_message("…")]
        yield out(history, notice(WAITING) if off else "")  # clears an earlier notice
        # From here on the status line is left alone unless this answer has something to say:
        # "Talk to a human" may be clicked while the answer streams, and its notice must stay.
        waiting = notice(WAITING) if off else None
        try:
            try:
                stream = service.chat_stream(message, conversation_id=conv_id, channel="web",
                                             suggestion=suggestion)
            except NotFoundError:
                # The stored conversation is gone (deleted, or a new database): start afresh.
                log.info("conversation %s not found; starting a new one", conv_id)
                stream = service.chat_stream(message, conversation_id=None, channel="web",
                                             suggestion=suggestion)
            conv_id = stream.conversation_id
            text = ""
            result: ChatResult | None = None
            for item in stream:
                if isinstance(item, str):
                    text += item
                    history[-1] = bot_message(bot_markdown(text))
                    yield out(history, waiting)
                else:
                    result = item
            if result is None:
                raise ChatbotError("the answer stream ended without a reply")
        except Exception as error:  # the customer gets a sentence, the log the traceback
            history = history[:-1]
            restore = None
            if isinstance(error, InvalidRequestError):
                history = history[:-1]  # not logged: take the bubble back, give the text back
                restore = message
            else:
                log.exception("web chat failed (conversation %s)", conv_id)
            yield out(history, notice(_customer_error(error)), restore)
            return
        if result.agent is not None:  # a person has the conversation: the bot stayed silent
            off = True
            yield out(history[:-1], notice(result.reply.text), shown=[])
            return
        history[-1] = bot_message(answer_markdown(result.reply.text, sources(result.reply)))
        ids = {**ids, len(history) - 1: result.message_id}
        off = off or result.handoff
        yield out(history, notice(WAITING) if off else None,
                  shown=[(s.faq_id, s.question) for s in result.reply.suggestions[:CHIPS]])

    def rate(ids: Ids, data: gr.LikeData, request: gr.Request) -> None:
        if (wait := over_limit(limiter, request)) is not None:
            gr.Warning(TOO_MANY.format(seconds=seconds(wait)))
            return
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        message_id = ids.get(int(index))
        if message_id is None:
            gr.Info("Only the assistant's answers can be rated.")
            return
        if data.liked is True:
            rating = "up"
        elif data.liked is False:
            rating = "down"
        else:
            return  # the rating was taken back; the last one given stays recorded
        try:
            service.feedback(message_id=message_id, rating=rating)
        except Exception:
            log.exception("saving feedback failed for message %s", message_id)
            gr.Warning("Sorry, we couldn't save your feedback. Please try again.")
            return
        gr.Info(THANKS)

    def ask_human(conv_id: str | None, request: gr.Request) -> tuple[Any, str]:
        if not conv_id:
            return False, notice(ASK_FIRST)
        if (wait := over_limit(limiter, request)) is not None:
            return gr.update(), notice(TOO_MANY.format(seconds=seconds(wait)))
        try:
            service.handoff(conversation_id=conv_id, reason="customer asked for a human (web chat)")
            said = service.agents.availability().notice
        except Exception as error:
            log.exception("hand-over failed for conversation %s", conv_id)
            return gr.update(), notice(_customer_error(error))  # as it was before the click
        return True, notice(f"{said} {KEEP_OPEN}")

    def after_answer(off: bool, shown: Offered) -> tuple[Any, ...]:
        """While a person has the conversation, follow their messages (the timer) and offer no
        suggestions; otherwise the latest answer's suggestions on the chips."""
        shown = [] if off else shown
        return (gr.Timer(active=bool(off)),
                *(gr.update(value=shown[i][1], visible=True) if i < len(shown)
                  else gr.update(value="", visible=False) for i in range(CHIPS)))

    def poll(conv_id: str | None, history: History, after: int) -> tuple[Any, ...]:
        """New live events: agent messages join the transcript; joins, hand-backs and
        resolves change the status line (and the last two stop the polling)."""
        if not conv_id:
            return gr.update(), after, gr.update(), gr.update(), gr.Timer(active=False)
        try:
            events = service.events.read(conv_id, after, CUSTOMER_EVENTS)
        except Exception:
            log.exception("reading live events of conversation %s failed", conv_id)
            return gr.update(), after, gr.update(), gr.update(), gr.update()
        if not events:
            return gr.update(), after, gr.update(), gr.update(), gr.update()
        history, active = list(history), True
        status: Any = gr.update()
        off: Any = gr.update()
        for event in events:
            name = str(event.data.get("agent") or "Someone")
            if event.type == "agent_message":
                history.append(agent_message(name, str(event.data.get("text", ""))))
            elif event.type == "agent_joined":
                status = notice(JOINED.format(agent=name))
            else:  # agent_left or resolved: the bot has the conversation again
                status = notice((LEFT if event.type == "agent_left" else RESOLVED)
                                .format(agent=name))
                off, active = False, False
        return history, events[-1].id, status, off, gr.Timer(active=active)

    def pick(index: int) -> Any:
        def picked(shown: Offered, history: History) -> tuple[Any, ...]:
            """A chip was clicked: its question joins the chat and the chips go."""
            hidden = tuple(gr.update(visible=False) for _ in range(CHIPS))
            if index >= len(shown):
                return (gr.update(), "", None, *hidden)
            faq_id, question = shown[index]
            return ([*history, customer_message(question)], question, faq_id, *hidden)
        return picked

    def respond_to_chip(message: str, history: History, conv_id: str | None, ids: Ids,
                        off: bool, faq_id: str | None, request: gr.Request
                        ) -> Iterator[tuple[Any, ...]]:
        yield from respond(message, history, conv_id, ids, off, request, suggestion=faq_id)

    def start_over() -> tuple[Any, ...]:
        return [], None, {}, False, [], "", "", 0

    answer_outputs = [chatbot, conversation_id, message_ids, handed_off, offered, status, textbox]
    for trigger in (textbox.submit, send.click):
        trigger(
            add_customer, [textbox, chatbot], [textbox, chatbot, pending],
            queue=False, api_visibility="private",
        ).then(
            respond, [pending, chatbot, conversation_id, message_ids, handed_off],
            answer_outputs, concurrency_limit=16, show_progress="hidden",
            api_visibility="private",
        ).then(after_answer, [handed_off, offered], [agent_timer, *chips],
               api_visibility="private")
    clicked = gr.State(None)  # the FAQ id of the chip being sent
    for index, chip in enumerate(chips):
        chip.click(
            pick(index), [offered, chatbot], [chatbot, pending, clicked, *chips],
            queue=False, api_visibility="private",
        ).then(
            respond_to_chip, [pending, chatbot, conversation_id, message_ids, handed_off, clicked],
            answer_outputs, concurrency_limit=16, show_progress="hidden",
            api_visibility="private",
        ).then(after_answer, [handed_off, offered], [agent_timer, *chips],
               api_visibility="private")
    chatbot.like(rate, [message_ids], None, api_visibility="private")
    human.click(ask_human, [conversation_id], [handed_off, status], api_visibility="private"
                ).then(after_answer, [handed_off, offered], [agent_timer, *chips],
                       api_visibility="private")
    agent_timer.tick(poll, [conversation_id, chatbot, last_event],
                     [chatbot, last_event, status, handed_off, agent_timer],
                     show_progress="hidden", api_visibility="private")
    for trigger in (restart.click, chatbot.clear):  # the Chatbot's own trash button too
        trigger(
            start_over, None,
            [chatbot, conversation_id, message_ids, handed_off, offered, status, textbox,
             last_event],
            api_visibility="private",
        ).then(after_answer, [handed_off, offered], [agent_timer, *chips],
               api_visibility="private")


def build_ui(service: ChatService, settings: Settings,
             learning: LearningLoop | None = None, limiter: Limiter | None = None) -> gr.Blocks:
    """The whole web UI as a Blocks app (not launched; ``mount_ui`` mounts it on FastAPI).
    The Improve tab is there when the app has a learning loop."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {TITLE}\nAnswers come from our help centre, and you can ask for a person at "
            "any point.",
            elem_id="support-header",
        )
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                _chat_tab(service, settings, limiter)
            with gr.Tab("Inbox", id="inbox"):
                build_inbox_tab(service, limiter)
            with gr.Tab("Admin", id="admin"):
                build_admin_tab(service, settings, limiter)
            if learning is not None:
                with gr.Tab("Improve", id="improve"):
                    build_improve_tab(learning, service, limiter)
    return demo


def mount_ui(app: Any, service: ChatService, settings: Settings, path: str = "/") -> Any:
    """Mount the UI on a FastAPI app at ``path`` with its theme and CSS; returns the app."""
    return gr.mount_gradio_app(
        app, build_ui(service, settings, getattr(app.state, "learning", None),
                      getattr(app.state, "limiter", None)), path=path,
        theme=theme(), css=CSS,
        footer_links=[], show_error=False,
    )
