"""The admin tab of the web UI: the frustration alert banner, statistics, monitoring charts
(``ui.charts``), a conversation browser, re-indexing and the webhook delivery log.

Nothing is shown before the admin token is entered (``ui.signin``: checked on the server, kept
in a ``gr.State``, checked again by every handler; wrong tokens count against the failed
sign-in limit shared with the admin API).
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import gradio as gr

from chatbot.config import Settings
from chatbot.conversations.service import ChatService
from chatbot.conversations.views import ConversationView
from chatbot.errors import ConflictError
from ui.charts import Monitoring
from ui.ratelimit import Limiter
from ui.signin import TokenPanel, explain, require, sign_in
from ui.text import literal_markdown, millis, number, percent, transcript_messages

PAGE_SIZE = 20
PERIODS = {"All time": None, "Last 24 hours": 1, "Last 7 days": 7, "Last 30 days": 30}
ANY = "any"
TABLE_HEADERS = ["Started (UTC)", "Channel", "Status", "Msgs", "First message"]
WEBHOOK_HEADERS = ["Queued (UTC)", "Event", "URL", "Status", "Attempts", "Last error"]


def _explain(error: BaseException, what: str) -> str:
    return explain(error, what, "admin")


def period_since(period: str) -> datetime | None:
    """The start of a period of the dropdown (None: all time)."""
    days = PERIODS.get(period)
    return datetime.now(UTC) - timedelta(days=days) if days else None


def stats_html(service: ChatService, period: str) -> str:
    s = service.stats(period_since(period))
    cards = [
        ("Conversations", str(s.conversations)),
        ("Bot replies", str(s.bot_messages)),
        ("Deflection rate", percent(s.deflection_rate)),
        ("Fallback rate", percent(s.fallback_rate)),
        ("Hand-over rate", percent(s.handoff_rate)),
        ("CSAT (1–5)", number(s.csat_avg)),
        ("Thumbs up", percent(s.thumbs_up_rate)),
        ("Latency p50", millis(s.latency_p50_ms)),
        ("Latency p95", millis(s.latency_p95_ms)),
    ]
    body = "".join(
        f'<div class="stat-card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div></div>'
        for label, value in cards
    )
    return f'<div class="stat-cards">{body}</div>'


def transcript(view: ConversationView) -> tuple[list[dict[str, Any]], str]:
    """A conversation as chatbot messages (all text escaped) plus a markdown summary."""
    messages = transcript_messages(view)
    lines = [
        f"**Conversation** `{view.id}` · channel {view.channel} · status **{view.status}** · "
        f"started {view.started_at:%Y-%m-%d %H:%M} UTC"
    ]
    for h in view.handoffs:
        state = {"pending": "waiting", "claimed": f"with {h.assigned_to or 'an agent'}",
                 "handed_back": "handed back to the bot"}.get(h.status, h.status)
        lines.append(f"- Hand-over {h.requested_at:%Y-%m-%d %H:%M} ({state}): "
                     f"{literal_markdown(h.reason)}")
    for f in view.feedback:
        if f.csat is not None or f.comment:
            lines.append(f"- Feedback: CSAT {f.csat or 'n/a'} {literal_markdown(f.comment or '')}")
    return messages, "\n".join(lines)


def build_admin_tab(service: ChatService, settings: Settings,
                    limiter: Limiter | None = None) -> None:
    """The admin tab's components and handlers (call inside a ``gr.Tab``). With a limiter,
    sign-ins count against the same failed sign-in limit as the admin API."""
    authorized = gr.State(False)
    page_ids = gr.State([])  # conversation ids of the table rows, in order
    page = gr.State(0)
    monitoring = Monitoring(service, settings)

    login = TokenPanel.build("admin", "### Admin sign-in\nEnter the admin token "
                             "(`CHATBOT_ADMIN_TOKEN`).", "Admin token", "Sign in")

    with gr.Column(visible=False) as admin_box:
        banner = monitoring.build_banner()
        with gr.Row():
            gr.Markdown("### Statistics")
            period = gr.Dropdown(list(PERIODS), value="All time", show_label=False,
                                 container=False, scale=0, min_width=180)
            refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90)
            sign_out = gr.Button("Sign out", size="sm", scale=0, min_width=90)
        stats = gr.HTML(elem_id="admin-stats")
        monitoring.build_charts()

        gr.Markdown("### Conversations")
        with gr.Row():
            status = gr.Dropdown([ANY, "open", "handed_off", "closed"], value=ANY, label="Status")
            channel = gr.Dropdown([ANY, "web", "widget", "api"], value=ANY, label="Channel")
            query = gr.Textbox(label="Text contains", max_lines=1)
        with gr.Row():
            search = gr.Button("Search", size="sm", variant="primary")
            previous = gr.Button("◀ Newer", size="sm")
            following = gr.Button("Older ▶", size="sm")
            page_label = gr.Markdown()
        table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, buttons=[],
                             column_widths=["19%", "11%", "14%", "8%", "48%"],
                             elem_id="admin-conversations")
        summary = gr.Markdown("Select a conversation to read its transcript.")
        chat_view = gr.Chatbot(label="Transcript", show_label=False, height=380,
                               sanitize_html=True, allow_tags=False, latex_delimiters=[],
                               feedback_options=None, buttons=[], elem_id="admin-transcript")

        gr.Markdown("### Knowledge base")
        with gr.Row():
            full = gr.Checkbox(label="Re-embed everything (slower)", value=False)
            reindex = gr.Button("Re-index now", variant="primary", elem_id="admin-reindex")
        reindex_result = gr.Markdown(elem_id="admin-reindex-result")

        with gr.Accordion("Webhook deliveries", open=False):
            # What went out to CHATBOT_WEBHOOK_URLS and how it went (chatbot.conversations.
            # webhooks); the URLs without their path, which may hold a secret.
            load_hooks = gr.Button("Show the latest", size="sm", elem_id="admin-webhooks-load")
            hooks = gr.Dataframe(headers=WEBHOOK_HEADERS, interactive=False, wrap=True,
                                 buttons=[], elem_id="admin-webhooks")

    def do_sign_in(value: str, request: gr.Request) -> tuple[Any, ...]:
        return sign_in(service.check_admin_token, value, request, limiter, "admin")

    def do_sign_out() -> tuple[Any, ...]:
        return False, gr.update(visible=True), gr.update(visible=False), "", [], "", []

    def load_stats(ok: bool, chosen: str) -> str:
        try:
            require(ok)
            return stats_html(service, chosen)
        except Exception as error:
            return f"<p>{_explain(error, 'Loading statistics')}</p>"  # escaped already

    def load_page(ok: bool, st: str, ch: str, q: str, number_: int) -> tuple[Any, ...]:
        try:
            require(ok)
            status_, channel_ = (None if st == ANY else st), (None if ch == ANY else ch)
            total = service.count_conversations(status=status_, channel=channel_, q=q or None)
            number_ = max(0, min(number_, max(0, (total - 1) // PAGE_SIZE)))
            rows = service.list_conversations(status=status_, channel=channel_, q=q or None,
                                              limit=PAGE_SIZE, offset=number_ * PAGE_SIZE)
        except Exception as error:
            return [], [], 0, _explain(error, "Loading conversations")
        data = [[r.started_at.strftime("%Y-%m-%d %H:%M"), r.channel, r.status, r.message_count,
                 r.preview] for r in rows]
        first = number_ * PAGE_SIZE + 1 if rows else 0
        label = f"{first}–{number_ * PAGE_SIZE + len(rows)} of {total}"
        return data, [r.id for r in rows], number_, label

    def open_conversation(ok: bool, ids: list[str], evt: gr.SelectData) -> tuple[Any, str]:
        try:
            require(ok)
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            messages, text = transcript(service.conversation(ids[int(row)]))
            return messages, text
        except (IndexError, ValueError):
            return [], "That row is no longer there; search again."
        except Exception as error:
            return [], _explain(error, "Opening the conversation")

    # Gradio finds the progress tracker by this default value, hence the call in the signature.
    def run_reindex(ok: bool, everything: bool,
                    progress: gr.Progress = gr.Progress()) -> str:  # noqa: B008
        try:
            require(ok)
            try:
                service.start_reindex(full=everything)
            except ConflictError:
                progress(None, desc="A re-index is already running; following it")
            while (state := service.reindex_status()).state == "running":
                if state.total:
                    progress((state.done, state.total), desc=state.stage or "embedding",
                             unit="phrasings")
                else:
                    progress(None, desc=state.stage or "starting")
                time.sleep(0.3)
        except Exception as error:
            return _explain(error, "Re-indexing")
        if state.state == "failed":
            return f"**Re-indexing failed:** {literal_markdown(state.error or 'unknown error')}"
        return (f"**Done:** {literal_markdown(state.summary)}. "
                "The assistant now answers from this index.")

    def load_webhooks(ok: bool) -> list[list[Any]]:
        try:
            require(ok)
            rows = service.webhooks.deliveries(limit=PAGE_SIZE * 2)
        except Exception as error:
            gr.Warning(_explain(error, "Loading the webhook log"))
            return []
        return [[d.created_at.strftime("%Y-%m-%d %H:%M:%S"), d.event, d.url, d.status,
                 d.attempts, d.last_error or ""] for d in rows]

    def load_monitoring(ok: bool, chosen: str) -> tuple[Any, ...]:
        return (monitoring.load_banner(ok), monitoring.timer_update(ok),
                *monitoring.load_charts(ok, period_since(chosen)))

    def load_clusters(ok: bool, chosen: str) -> tuple[Any, ...]:
        return monitoring.load_clusters(ok, period_since(chosen))

    def clear_monitoring() -> tuple[Any, ...]:
        return ("", monitoring.timer_update(False), *monitoring.empty_charts(),
                *monitoring.load_clusters(False, None))

    monitor_outputs = [banner, monitoring.timer, *monitoring.chart_outputs]
    page_inputs = [authorized, status, channel, query, page]
    page_outputs = [table, page_ids, page, page_label]
    for trigger in login.triggers:
        trigger(
            do_sign_in, [login.token], login.outputs(authorized, admin_box),
            api_visibility="private",
        ).then(load_stats, [authorized, period], [stats], api_visibility="private").then(
            load_page, page_inputs, page_outputs, api_visibility="private"
        ).then(load_monitoring, [authorized, period], monitor_outputs, api_visibility="private"
               ).then(load_clusters, [authorized, period], monitoring.cluster_outputs,
                      api_visibility="private")
    sign_out.click(do_sign_out, None, [authorized, login.box, admin_box, stats, table, summary,
                                       chat_view], api_visibility="private").then(
        clear_monitoring, None, [*monitor_outputs, *monitoring.cluster_outputs],
        api_visibility="private")
    for change in (refresh.click, period.change):
        change(load_stats, [authorized, period], [stats], api_visibility="private").then(
            load_monitoring, [authorized, period], monitor_outputs, api_visibility="private"
        ).then(load_clusters, [authorized, period], monitoring.cluster_outputs,
               api_visibility="private")
    # The banner follows the alert while the page is open (hidden progress: no flicker).
    monitoring.timer.tick(monitoring.load_banner, [authorized], [banner], show_progress="hidden",
                          api_visibility="private")
    search.click(lambda: 0, None, [page], api_visibility="private").then(
        load_page, page_inputs, page_outputs, api_visibility="private")
    previous.click(lambda n: max(0, n - 1), [page], [page], api_visibility="private").then(
        load_page, page_inputs, page_outputs, api_visibility="private")
    following.click(lambda n: n + 1, [page], [page], api_visibility="private").then(
        load_page, page_inputs, page_outputs, api_visibility="private")
    table.select(open_conversation, [authorized, page_ids], [chat_view, summary],
                 api_visibility="private")
    reindex.click(run_reindex, [authorized, full], [reindex_result], api_visibility="private")
    load_hooks.click(load_webhooks, [authorized], [hooks], api_visibility="private")
