"""The Inbox tab of the web UI: where a person from the support team answers hand-overs.

Sign in with an agent token (``chatbot agents add NAME``; ``ui.signin``). The check happens on
the server and only the agent's id lives in a ``gr.State`` (server-side, per browser session);
every handler looks the agent up again (``service.agents.refresh``), so a removed agent is out
at their next click and nothing can be called without signing in; wrong tokens count against
the failed sign-in limit shared with the API. While signed in, a timer refreshes the list and
the open conversation every few seconds, which also keeps the agent "signed in" for the
hand-over promise (``CHATBOT_AGENT_ONLINE_MINUTES``); it stops when the agent signs out or is
no longer signed in.

The list: open hand-overs, high priority first, then the longest waiting, with who has each
claimed one. The conversation: the whole transcript (the bot's routes, sources and reasons, the
agents' names), the customer's reference, and the actions: claim, reply, hand back to the bot,
resolve. Two agents cannot hold one conversation: the second is told who has it. All text is
escaped (``ui.text``) before the Chatbot renders it.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import gradio as gr

from chatbot.conversations.agents import AgentView, InboxItem
from chatbot.conversations.service import ChatService
from chatbot.conversations.views import ConversationView
from chatbot.errors import ChatbotError
from ui.ratelimit import Limiter
from ui.signin import SOMETHING_WRONG, NotSignedIn, TokenPanel, sign_in
from ui.text import bot_markdown, literal_markdown, transcript_messages

log = logging.getLogger(__name__)

REFRESH_S = 4.0
HEADERS = ["Priority", "Waiting since (UTC)", "Status", "Channel", "Customer", "Last message"]
NOT_SIGNED_IN = "Sign in with your agent token first."
PICK_FIRST = "Pick a conversation from the list first."


def rows(items: list[InboxItem]) -> list[list[Any]]:
    return [[("HIGH" if i.priority == "high" else "normal"),
             i.requested_at.strftime("%Y-%m-%d %H:%M"),
             f"claimed by {i.claimed_by}" if i.status == "claimed" else "waiting",
             i.channel, i.customer_ref or "—", i.last_customer_message] for i in items]


def summary(item: InboxItem | None, view: ConversationView | None) -> str:
    if view is None:
        return PICK_FIRST
    lines = [f"**Customer:** {literal_markdown(view.customer_ref or 'not given')} · channel "
             f"{view.channel} · conversation `{view.id}`"]
    if item is None:
        lines.append("No hand-over is open in this conversation any more.")
    else:
        who = (f"claimed by **{literal_markdown(item.claimed_by or '?')}**"
               if item.status == "claimed" else "**waiting** for an agent")
        lines.append(f"**Hand-over** ({item.priority} priority, {who}): "
                     f"{literal_markdown(item.reason)}")
    return "  \n".join(lines)


def build_inbox_tab(service: ChatService, limiter: Limiter | None = None) -> None:
    """The Inbox tab's components and handlers (call inside a ``gr.Tab``). With a limiter,
    wrong tokens count against the same failed sign-in limit as the API's."""
    desk = service.agents
    agent_id = gr.State(None)
    row_ids = gr.State([])  # conversation ids of the table rows, in order
    current = gr.State(None)  # the conversation shown
    timer = gr.Timer(REFRESH_S, active=False)

    login = TokenPanel.build("inbox", "### Agent sign-in\nEnter your agent token (an admin "
                             "creates one with `chatbot agents add NAME`).", "Agent token",
                             "Open the inbox")

    with gr.Column(visible=False) as inbox_box:
        with gr.Row():
            who = gr.Markdown(elem_id="inbox-who")
            sign_out = gr.Button("Sign out", size="sm", scale=0, min_width=90)
        counts = gr.Markdown(elem_id="inbox-counts")
        table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, buttons=[],
                             column_widths=["11%", "16%", "16%", "9%", "13%", "35%"],
                             elem_id="inbox-table")
        header = gr.Markdown(PICK_FIRST, elem_id="inbox-summary")
        chat_view = gr.Chatbot(label="Conversation", show_label=False, height=380,
                               sanitize_html=True, allow_tags=False, latex_delimiters=[],
                               feedback_options=None, buttons=[], elem_id="inbox-transcript",
                               group_consecutive_messages=False)
        reply = gr.Textbox(label="Your reply to the customer", lines=2, max_lines=8,
                           max_length=service.settings.max_message_chars,
                           elem_id="inbox-reply")
        with gr.Row():
            claim = gr.Button("Claim", elem_id="inbox-claim")
            send = gr.Button("Send reply", variant="primary", elem_id="inbox-send")
            handback = gr.Button("Hand back to the bot", elem_id="inbox-handback")
            resolve = gr.Button("Resolve", elem_id="inbox-resolve")
        status = gr.Markdown(elem_id="inbox-status")

    def signed_in(agent: str | None) -> AgentView:
        found = desk.refresh(agent) if agent else None
        if found is None:
            raise NotSignedIn(NOT_SIGNED_IN)
        return found

    def explain(error: BaseException, what: str) -> str:
        if isinstance(error, NotSignedIn | ChatbotError):
            return f"**{bot_markdown(str(error))}**"
        log.exception("inbox: %s failed", what)
        return f"{what} failed. {SOMETHING_WRONG}"

    def load(agent: str | None, conversation: str | None) -> tuple[Any, ...]:
        """The list and the open conversation, fresh (also each timer tick; the timer stops
        once the agent is no longer signed in, e.g. removed)."""
        try:
            me = signed_in(agent)
            items = desk.inbox(transcripts=False)
        except Exception as error:
            timer_now = gr.Timer(active=False) if isinstance(error, NotSignedIn) else gr.update()
            return (gr.update(), gr.update(), explain(error, "Loading the inbox"), gr.update(),
                    gr.update(), gr.update(), timer_now)
        waiting = sum(i.status == "pending" for i in items)
        counted = (f"**{waiting}** waiting · **{len(items) - waiting}** claimed"
                   if items else "Nothing is waiting. New hand-overs appear here by themselves.")
        shown_header: Any = gr.update()
        shown_chat: Any = gr.update()
        if conversation:
            shown_header, shown_chat = show(conversation, items)
        return (rows(items), [i.conversation_id for i in items], counted, shown_header,
                shown_chat, f"Signed in as **{literal_markdown(me.name)}**", gr.update())

    def show(conversation: str, items: list[InboxItem]) -> tuple[str, list[dict[str, Any]]]:
        view = service.conversation(conversation)
        item = next((i for i in items if i.conversation_id == conversation), None)
        return summary(item, view), transcript_messages(view)

    def do_sign_in(value: str, request: gr.Request) -> tuple[Any, ...]:
        agent, *shown = sign_in(desk.authenticate, value, request, limiter, "inbox")
        return (agent.id if agent else None, *shown, gr.Timer(active=agent is not None))

    def do_sign_out() -> tuple[Any, ...]:
        return (None, gr.update(visible=True), gr.update(visible=False), [], [], None,
                PICK_FIRST, [], "", gr.Timer(active=False))

    def pick(agent: str | None, ids: list[str], evt: gr.SelectData) -> tuple[Any, ...]:
        try:
            signed_in(agent)
            row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
            conversation = ids[int(row)]
            header_text, messages = show(conversation, desk.inbox(transcripts=False))
        except (IndexError, ValueError):
            return None, "That row is no longer there.", [], ""
        except Exception as error:
            return None, PICK_FIRST, [], explain(error, "Opening the conversation")
        return conversation, header_text, messages, ""

    def act(action: str, agent: str | None, conversation: str | None,
            text: str) -> tuple[Any, str]:
        """One action on the open conversation; returns (reply box, status line)."""
        try:
            me = signed_in(agent)
            if not conversation:
                return gr.update(), PICK_FIRST
            if action == "claim":
                desk.claim(conversation, me)
                return gr.update(), "You have this conversation; the bot stays quiet."
            if action == "reply":
                desk.reply(conversation, me, text)
                return "", "Sent: it appears in the customer's chat while it is open."
            if action == "handback":
                desk.handback(conversation, me)
                return gr.update(), "Handed back: the bot answers this conversation again."
            desk.resolve(conversation, me)
            return gr.update(), "Resolved: the bot answers this conversation again."
        except Exception as error:
            return gr.update(), explain(error, action.title())

    outputs = [table, row_ids, counts, header, chat_view, who, timer]
    for trigger in login.triggers:
        trigger(do_sign_in, [login.token], [*login.outputs(agent_id, inbox_box), timer],
                api_visibility="private").then(
            load, [agent_id, current], outputs, api_visibility="private")
    sign_out.click(do_sign_out, None, [agent_id, login.box, inbox_box, table, row_ids, current,
                                       header, chat_view, status, timer],
                   api_visibility="private")
    timer.tick(load, [agent_id, current], outputs, api_visibility="private",
               show_progress="hidden")
    table.select(pick, [agent_id, row_ids], [current, header, chat_view, status],
                 api_visibility="private")
    for button, action in ((claim, "claim"), (send, "reply"), (handback, "handback"),
                           (resolve, "resolve")):
        button.click(partial(act, action), [agent_id, current, reply], [reply, status],
                     api_visibility="private").then(
            load, [agent_id, current], outputs, api_visibility="private")
