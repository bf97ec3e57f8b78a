"""The Gradio web UI: the customer chat tab and the token-protected admin tab.

Owns the page served at ``/``: streaming answers from ``ChatService.chat_stream`` with the
sources under each answer, thumbs up/down on answers (the Chatbot's like/dislike event), a
"Talk to a human" button, and the admin tab from ``ui.admin``. It talks only to ChatService,
never to the database or the pipeline directly, so every answer is logged like any other.

Customers see friendly sentences; stack traces go to the log only. Every text shown in a
Chatbot passes through ``ui.text`` first, so nothing a customer types is rendered as HTML.

``mount_ui(app, service, settings)`` is how ``chatbot.web.app.create_app`` mounts the page: since
Gradio 6 the theme and CSS are given when mounting, not to ``gr.Blocks``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import gradio as gr

from chatbot.config import Settings
from chatbot.conversations.service import ChatResult, ChatService
from chatbot.conversations.views import sources
from chatbot.errors import ChatbotError, InvalidRequestError, NotFoundError
from ui.admin import build_admin_tab
from ui.text import answer_markdown, bot_markdown, literal_markdown

log = logging.getLogger(__name__)

TITLE = "Customer support"
GREETING = "Hi! Ask me about orders, shipping, returns or your account."
SORRY = "Sorry, something went wrong on our side. Please try again in a moment."
UNAVAILABLE = (
    "The assistant is not available right now. Please try again in a minute, "
    "or use “Talk to a human”."
)
HANDED_OFF = "A member of our support team has been notified and will reply in this conversation."
ASK_FIRST = "Tell us briefly what you need first, then we'll pass it on to a person."
THANKS = "Thanks for your feedback!"

History = list[dict[str, Any]]
Ids = dict[int, str]  # chatbot message index -> logged bot message id (feedback targets it)

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


def _chat_tab(service: ChatService, settings: Settings) -> None:
    conversation_id = gr.State(None)
    message_ids = gr.State({})
    handed_off = gr.State(False)
    pending = gr.State("")

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
        message: str, history: History, conv_id: str | None, ids: Ids, off: bool
    ) -> Iterator[tuple[Any, ...]]:
        """Stream one answer. Yields (chatbot, conversation id, ids, hand-over, status, textbox)."""
        if not message:
            yield history, conv_id, ids, off, gr.update(), gr.update()
            return
        waiting = notice(HANDED_OFF) if off else ""
        history = [*history, bot_message("…")]
        yield history, conv_id, ids, off, waiting, gr.update()
        try:
            try:
                stream = service.chat_stream(message, conversation_id=conv_id, channel="web")
            except NotFoundError:
                # The stored conversation is gone (deleted, or a new database): start afresh.
                log.info("conversation %s not found; starting a new one", conv_id)
                stream = service.chat_stream(message, conversation_id=None, channel="web")
            conv_id = stream.conversation_id
            text = ""
            result: ChatResult | None = None
            for item in stream:
                if isinstance(item, str):
                    text += item
                    history[-1] = bot_message(bot_markdown(text))
                    yield history, conv_id, ids, off, waiting, gr.update()
                else:
                    result = item
            if result is None:
                raise ChatbotError("the answer stream ended without a reply")
        except Exception as error:  # the customer gets a sentence, the log the traceback
            history = history[:-1]
            restore: Any = gr.update()
            if isinstance(error, InvalidRequestError):
                history = history[:-1]  # not logged: take the bubble back, give the text back
                restore = message
            else:
                log.exception("web chat failed (conversation %s)", conv_id)
            yield history, conv_id, ids, off, notice(_customer_error(error)), restore
            return
        history[-1] = bot_message(answer_markdown(result.reply.text, sources(result.reply)))
        ids = {**ids, len(history) - 1: result.message_id}
        off = off or result.handoff
        yield history, conv_id, ids, off, notice(HANDED_OFF) if off else "", gr.update()

    def rate(ids: Ids, data: gr.LikeData) -> None:
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

    def ask_human(conv_id: str | None) -> tuple[bool, str]:
        if not conv_id:
            return False, notice(ASK_FIRST)
        try:
            service.handoff(conversation_id=conv_id, reason="customer asked for a human (web chat)")
        except Exception as error:
            log.exception("hand-over failed for conversation %s", conv_id)
            return False, notice(_customer_error(error))
        return True, notice(HANDED_OFF)

    def start_over() -> tuple[Any, ...]:
        return [], None, {}, False, "", ""

    for trigger in (textbox.submit, send.click):
        trigger(
            add_customer, [textbox, chatbot], [textbox, chatbot, pending],
            queue=False, api_visibility="private",
        ).then(
            respond, [pending, chatbot, conversation_id, message_ids, handed_off],
            [chatbot, conversation_id, message_ids, handed_off, status, textbox],
            concurrency_limit=16, show_progress="hidden", api_visibility="private",
        )
    chatbot.like(rate, [message_ids], None, api_visibility="private")
    human.click(ask_human, [conversation_id], [handed_off, status], api_visibility="private")
    for trigger in (restart.click, chatbot.clear):  # the Chatbot's own trash button too
        trigger(
            start_over, None,
            [chatbot, conversation_id, message_ids, handed_off, status, textbox],
            api_visibility="private",
        )


def build_ui(service: ChatService, settings: Settings) -> gr.Blocks:
    """The whole web UI as a Blocks app (not launched; ``mount_ui`` mounts it on FastAPI)."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {TITLE}\nAnswers come from our help centre; a person can take over any time.",
            elem_id="support-header",
        )
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                _chat_tab(service, settings)
            with gr.Tab("Admin", id="admin"):
                build_admin_tab(service, settings)
    return demo


def mount_ui(app: Any, service: ChatService, settings: Settings, path: str = "/") -> Any:
    """Mount the UI on a FastAPI app at ``path`` with its theme and CSS; returns the app."""
    return gr.mount_gradio_app(
        app, build_ui(service, settings), path=path, theme=theme(), css=CSS,
        footer_links=[], show_error=False,
    )
