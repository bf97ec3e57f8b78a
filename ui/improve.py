"""The Improve tab of the web UI: the review queue of suggested FAQs and the content-gap report.

Nothing is shown before the admin token is entered; as on the Admin tab (``ui.signin``) the
check happens on the server, its result lives in a ``gr.State`` and every handler checks it
again (Gradio handlers can be called without the page). Everything goes through
``chatbot.learning.loop.LearningLoop``, the same object the admin API uses.

Suggestions: pick one from the queue, read the customer questions and agent answers behind it,
edit question, answer and category (or the FAQ it is linked to), then approve (the re-index
starts; the status line says when the assistant serves it) or reject. Content gaps: unanswered
questions clustered by topic for a period, most asked first, as a table and a CSV download; pick
a topic to read its questions and open its conversations' transcripts.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from chatbot.conversations.service import ChatService
from chatbot.learning.gaps import report_csv
from chatbot.learning.loop import LearningLoop
from chatbot.learning.views import GapReport, Review, Suggestion
from ui.admin import transcript
from ui.ratelimit import Limiter
from ui.signin import TokenPanel, explain, require, sign_in
from ui.text import literal_markdown

STATUSES = ["pending", "approved", "merged_into_faq", "rejected", "all"]
PERIODS = {"Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90, "All time": None}
QUEUE_HEADERS = ["Id", "Asked", "Question", "Links to FAQ", "Category", "Status"]
GAP_HEADERS = ["#", "Questions", "Chats", "Fallbacks", "Hand-overs", "Thumbs down",
               "Topic (its most typical question)"]
PAGE = 100
PICK_FIRST = "Pick a suggestion from the queue first."


def _explain(error: BaseException, what: str) -> str:
    return explain(error, what, "improve")


def queue_rows(items: list[Suggestion]) -> list[list[Any]]:
    return [[s.id, s.count, s.question, s.linked_faq_id or "—", s.category or "—", s.status]
            for s in items]


def details(s: Suggestion) -> str:
    """What is behind a suggestion, as escaped markdown."""
    if s.linked_faq_id:
        score = f" (cosine {s.link_score:.2f})" if s.link_score is not None else ""
        head = (f"**Linked to FAQ `{literal_markdown(s.linked_faq_id)}`**{score}: approving adds "
                "these phrasings to it; clear the field to make a new entry instead.")
    else:
        head = "**A new FAQ entry** once approved."
    lines = [head, f"Asked in {s.count} conversation(s); status **{s.status}**"
             + (f" as `{literal_markdown(s.record_id)}`" if s.record_id else "") + ".",
             "", "**Customer phrasings**"]
    lines += [f"- {literal_markdown(p)}" for p in s.phrasings]
    lines += ["", "**Agent answers**"]
    for answer in dict.fromkeys(src.answer for src in s.sources):
        lines.append(f"> {literal_markdown(answer)}".replace("\n", "\n> "))
    conversations = list(dict.fromkeys(src.conversation_id for src in s.sources))
    lines += ["", "Conversations: " + ", ".join(f"`{c}`" for c in conversations)]
    return "\n".join(lines)


def review_text(review: Review, verb: str) -> str:
    text = f"**Suggestion {review.suggestion.id} {verb}.**"
    if review.reindex is not None:
        text += (" Re-indexing in the background; the assistant answers from the new index when "
                 "it is done (Admin tab, or GET /api/v1/admin/reindex/status).")
    return text


def gap_rows(report: GapReport) -> list[list[Any]]:
    return [[t.rank, t.questions, t.conversations, t.fallbacks, t.handoffs, t.thumbs_down,
             t.label] for t in report.topics]


def build_improve_tab(learning: LearningLoop, service: ChatService,
                      limiter: Limiter | None = None) -> None:
    """The Improve tab's components and handlers (call inside a ``gr.Tab``). With a limiter,
    wrong tokens count against the client's failed sign-ins, as on the Admin tab."""
    authorized = gr.State(False)
    ids = gr.State([])  # suggestion ids of the queue rows
    chosen = gr.State(None)  # the suggestion being edited
    report_state = gr.State(None)  # the last gap report (as JSON)

    login = TokenPanel.build("improve", "### Improve the assistant\nEnter the admin token "
                             "(`CHATBOT_ADMIN_TOKEN`).", "Admin token", "Sign in")

    with gr.Column(visible=False) as main_box:
        gr.Markdown("### Suggested FAQs\nLearnt from agents' answers to questions the assistant "
                    "could not answer. Approve to add them to the knowledge base.")
        with gr.Row():
            status = gr.Dropdown(STATUSES, value="pending", label="Status", scale=0,
                                 min_width=180)
            refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90)
        queue = gr.Dataframe(headers=QUEUE_HEADERS, interactive=False, wrap=True, buttons=[],
                             column_widths=["6%", "7%", "45%", "14%", "14%", "14%"],
                             elem_id="improve-queue")
        behind = gr.Markdown(PICK_FIRST, elem_id="improve-details")
        question = gr.Textbox(label="Question", max_lines=3, elem_id="improve-question")
        answer = gr.Textbox(label="Answer", lines=4, elem_id="improve-answer")
        with gr.Row():
            category = gr.Textbox(label="Category", max_lines=1)
            linked = gr.Textbox(label="Links to FAQ (id; empty: a new entry)", max_lines=1)
        with gr.Row():
            save = gr.Button("Save edits", size="sm")
            approve = gr.Button("Approve", variant="primary", size="sm",
                                elem_id="improve-approve")
            reject = gr.Button("Reject", variant="stop", size="sm", elem_id="improve-reject")
        outcome = gr.Markdown(elem_id="improve-outcome")

        gr.Markdown("### Content gaps\nFallbacks, hand-overs and thumbs-down questions, "
                    "clustered by topic, most asked first.")
        with gr.Row():
            period = gr.Dropdown(list(PERIODS), value="Last 30 days", show_label=False,
                                 container=False, scale=0, min_width=180)
            build = gr.Button("Build report", size="sm", scale=0, min_width=120,
                              elem_id="improve-gaps")
            download = gr.DownloadButton("Download CSV", size="sm", scale=0, min_width=140,
                                         visible=False)
        gaps = gr.Dataframe(headers=GAP_HEADERS, interactive=False, wrap=True, buttons=[],
                            column_widths=["5%", "10%", "8%", "10%", "11%", "11%", "45%"],
                            elem_id="improve-gap-table")
        topic = gr.Markdown(elem_id="improve-topic")
        conversation = gr.Dropdown([], label="Open a conversation of this topic",
                                   interactive=True)
        summary = gr.Markdown()
        chat_view = gr.Chatbot(label="Transcript", show_label=False, height=320,
                               sanitize_html=True, allow_tags=False, latex_delimiters=[],
                               feedback_options=None, buttons=[], visible=False,
                               elem_id="improve-transcript")

    def do_sign_in(value: str, request: gr.Request) -> tuple[Any, ...]:
        return sign_in(service.check_admin_token, value, request, limiter, "improve")

    def load_queue(ok: bool, st: str) -> tuple[Any, ...]:
        try:
            require(ok)
            _, items = learning.list(status=None if st == "all" else st, limit=PAGE)
        except Exception as error:
            return [], [], _explain(error, "Loading suggestions")
        return queue_rows(items), [s.id for s in items], PICK_FIRST

    def pick(ok: bool, row_ids: list[int], evt: gr.SelectData) -> tuple[Any, ...]:
        try:
            require(ok)
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            s = learning.get(int(row_ids[int(row)]))
        except (IndexError, ValueError):
            return None, "That row is no longer there; refresh.", "", "", "", ""
        except Exception as error:
            return None, _explain(error, "Opening the suggestion"), "", "", "", ""
        return s.id, details(s), s.question, s.answer, s.category, s.linked_faq_id or ""

    def act(action: str, ok: bool, picked: int | None, q: str, a: str, c: str,
            link: str) -> tuple[Any, ...]:
        """The outcome line, then the editor: kept after a save or a failure (the admin's
        edits are not lost), emptied once the suggestion has left the queue."""
        keep = (gr.update(),) * 5
        try:
            require(ok)
            if picked is None:
                return (PICK_FIRST, *keep)
            if action == "save":
                return (review_text(learning.update(picked, question=q, answer=a, category=c,
                                                    linked_faq_id=link), "saved"), *keep)
            if action == "approve":
                current = learning.get(picked)
                if (current.linked_faq_id or "") != link.strip():
                    learning.update(picked, linked_faq_id=link)
                text = review_text(learning.approve(picked, question=q, answer=a, category=c),
                                   "approved")
            else:
                text = review_text(learning.reject(picked), "rejected")
        except Exception as error:
            return (_explain(error, action.capitalize()), *keep)
        return text, None, "", "", "", ""

    def build_gaps(ok: bool, chosen_period: str) -> tuple[Any, ...]:
        try:
            require(ok)
            days = PERIODS.get(chosen_period)
            since = datetime.now(UTC) - timedelta(days=days) if days else None
            report = learning.gaps(since=since)
        except Exception as error:
            return [], None, gr.update(visible=False), _explain(error, "The gap report")
        folder = Path(tempfile.mkdtemp(prefix="gaps-"))
        path = folder / "content-gaps.csv"
        path.write_text(report_csv(report), encoding="utf-8")
        note = (f"{report.questions} question(s) in {len(report.topics)} topic(s)."
                if report.topics else "No unanswered questions in this period.")
        return (gap_rows(report), report.model_dump(mode="json"),
                gr.update(value=str(path), visible=bool(report.topics)), note)

    def pick_topic(ok: bool, report: dict[str, Any] | None,
                   evt: gr.SelectData) -> tuple[Any, ...]:
        try:
            require(ok)
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            t = GapReport.model_validate(report).topics[int(row)]
        except Exception as error:
            return _explain(error, "Opening the topic"), gr.update(choices=[], value=None)
        lines = [f"**{literal_markdown(t.label)}** — {t.questions} question(s) in "
                 f"{t.conversations} conversation(s)", ""]
        lines += [f"- {literal_markdown(e)}" for e in t.examples]
        return "\n".join(lines), gr.update(choices=t.conversation_ids, value=None)

    def open_conversation(ok: bool, conversation_id: str | None) -> tuple[Any, str]:
        if not conversation_id:
            return gr.update(value=[], visible=False), ""
        try:
            require(ok)
            messages, text = transcript(service.conversation(conversation_id))
        except Exception as error:
            return gr.update(value=[], visible=False), _explain(error, "Opening the conversation")
        return gr.update(value=messages, visible=True), text

    editor = [authorized, chosen, question, answer, category, linked]
    for trigger in login.triggers:
        trigger(do_sign_in, [login.token], login.outputs(authorized, main_box),
                api_visibility="private").then(
            load_queue, [authorized, status], [queue, ids, behind], api_visibility="private")
    for control in (refresh.click, status.change):
        control(load_queue, [authorized, status], [queue, ids, behind],
                api_visibility="private")
    queue.select(pick, [authorized, ids], [chosen, behind, question, answer, category, linked],
                 api_visibility="private")
    for button, action in ((save, "save"), (approve, "approve"), (reject, "reject")):
        button.click(partial(act, action), editor,
                     [outcome, chosen, question, answer, category, linked],
                     api_visibility="private").then(
            load_queue, [authorized, status], [queue, ids, behind], api_visibility="private")
    build.click(build_gaps, [authorized, period], [gaps, report_state, download, topic],
                api_visibility="private")
    gaps.select(pick_topic, [authorized, report_state], [topic, conversation],
                api_visibility="private")
    conversation.change(open_conversation, [authorized, conversation], [chat_view, summary],
                        api_visibility="private")
