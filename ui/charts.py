"""The admin tab's monitoring: the frustration alert banner and the charts.

Owns what the team watches: a banner with the frustration alert's state
(``chatbot.conversations.alerts``: red while it is firing, a quiet line otherwise, refreshed
every ``BANNER_REFRESH_S`` while the page is open); daily charts of the last ``DAYS`` UTC days
(conversations, deflection and hand-over rates, average customer sentiment, share of frustrated
conversations: ``ChatService.stats_series``); the topics of the chosen period ranked by volume
and by negative sentiment (``chatbot.conversations.topics``, categories from the serving index);
and the unanswered questions' clusters (``chatbot.learning.gaps``, the content-gap report, with
the serving embedder; without one only their number is shown, and says why).

``ui.admin`` places the components and calls the handlers with its server-side ``authorized``
state: every handler returns empty values unless it is True, so calling them without the page
shows nothing. Plots take pandas DataFrames (Gradio 6); rates are shown in percent.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime, time, timedelta
from typing import Any

import gradio as gr
import pandas as pd

from chatbot.config import Settings
from chatbot.conversations.alerts import AlertStatus, FrustrationAlert
from chatbot.conversations.service import ChatService
from chatbot.conversations.topics import TopicReport, categories_from, topic_report
from chatbot.learning.gaps import gap_report

log = logging.getLogger(__name__)

DAYS = 30  # the daily charts' span, whatever the period of the topics
TOP = 10  # bars per topic chart
CLUSTER_QUESTIONS = 500  # the most recent unanswered questions clustered for the chart
LABEL_CHARS = 34
BANNER_REFRESH_S = 30.0
ON_STYLE = ("border:1px solid #b91c1c;background:#fef2f2;color:#7f1d1d;border-radius:10px;"
            "padding:10px 14px;font-size:15px")
OFF_STYLE = ("border:1px solid var(--border-color-primary);border-radius:10px;padding:8px 14px;"
             "color:var(--body-text-color-subdued);font-size:13.5px")


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def _share(status: AlertStatus) -> str:
    share = "n/a" if status.share is None else f"{100 * status.share:.0f}%"
    return (f"{status.frustrated} of {status.conversations} conversations ({share}) in the last "
            f"{status.window_minutes:g} minutes had a frustrated customer")


def banner_html(status: AlertStatus, settings: Settings) -> str:
    """The banner: red with the numbers while the alert fires, else one quiet line."""
    rule = (f"alerts at {100 * status.threshold:.0f}% with at least "
            f"{status.min_conversations} conversations")
    if status.active:
        since = f" since {status.since:%Y-%m-%d %H:%M} UTC" if status.since else ""
        hooks = len(settings.webhook_urls)
        sent = (f"; the <code>alert.frustration</code> webhook was queued for {hooks} URL(s) "
                "(Webhook deliveries below shows how it went)" if hooks else "")
        text = (f"<b>⚠ Frustration alert</b>{since}: {html.escape(_share(status))} "
                f"({rule}){sent}. It stays until the share falls below the threshold.")
        return f'<div role="alert" class="alert-banner alert-on" style="{ON_STYLE}">{text}</div>'
    off = ("" if settings.alert_interval_s
           else " The automatic check is off (CHATBOT_ALERT_INTERVAL_S=0).")
    text = f"No frustration alert: {html.escape(_share(status))} ({rule}).{off}"
    return f'<div class="alert-banner alert-off" style="{OFF_STYLE}">{text}</div>'


def daily_frames(service: ChatService, today: datetime | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(conversations, rates, sentiment, frustrated share) per day of the last ``DAYS``."""
    until = (today or datetime.now(UTC)).date()
    series = service.stats_series(until - timedelta(days=DAYS - 1), until)
    days = list(pd.to_datetime([d.day for d in series.days]))  # temporal axes
    volume = pd.DataFrame({"day": days, "conversations": [d.conversations for d in series.days]})
    rates = pd.DataFrame(
        [{"day": day, "rate (%)": _pct(value), "metric": metric}
         for day, d in zip(days, series.days, strict=True)
         for metric, value in (("deflection", d.deflection_rate), ("hand-over", d.handoff_rate))
         if value is not None],
        columns=["day", "rate (%)", "metric"])
    # Days without signals are left out rather than drawn as 0: 0 is a real sentiment.
    sentiment = pd.DataFrame(
        [{"day": day, "sentiment": d.sentiment_avg}
         for day, d in zip(days, series.days, strict=True) if d.sentiment_avg is not None],
        columns=["day", "sentiment"])
    frustrated = pd.DataFrame(
        [{"day": day, "frustrated (%)": _pct(d.frustrated_rate)}
         for day, d in zip(days, series.days, strict=True) if d.frustrated_rate is not None],
        columns=["day", "frustrated (%)"])
    return volume, rates, sentiment, frustrated


def topic_frames(report: TopicReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(top topics by questions, top topics by lowest average sentiment)."""
    volume = pd.DataFrame([{"topic": t.topic, "questions": t.questions}
                           for t in report.by_volume[:TOP]], columns=["topic", "questions"])
    negative = pd.DataFrame(
        [{"topic": t.topic, "sentiment": t.sentiment_avg, "questions": t.questions}
         for t in report.by_sentiment[:TOP]], columns=["topic", "sentiment", "questions"])
    return volume, negative


def _label(rank: int, text: str) -> str:
    short = text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1].rstrip() + "…"
    return f"{rank}. {short}"  # the rank keeps two topics with one wording apart


class Monitoring:
    """The banner, the charts and their handlers for one admin tab."""

    def __init__(self, service: ChatService, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.alert = FrustrationAlert(settings, service.engine)  # reads; the job evaluates

    # --- components (call inside the admin panel, where each should appear) ---------------------
    def build_banner(self) -> gr.HTML:
        self.banner = gr.HTML(elem_id="admin-alert")
        # Ticks only while signed in (``timer_update``): the customers' chat is the same page,
        # and their browsers should not poll the server for an admin banner.
        self.timer = gr.Timer(BANNER_REFRESH_S, active=False)
        return self.banner

    @staticmethod
    def timer_update(ok: bool) -> gr.Timer:
        return gr.Timer(active=bool(ok))

    def build_charts(self) -> None:
        gr.Markdown(f"### Monitoring\nDaily charts: the last {DAYS} days (UTC, by conversation "
                    "start). Topics: the period chosen above.")
        line: dict[str, Any] = dict(x="day", x_title="day (UTC)", height=260)
        with gr.Row(elem_id="admin-daily-charts"):
            self.volume = gr.BarPlot(y="conversations", y_lim=[0, None],
                                     title="Conversations per day",
                                     elem_id="chart-conversations", **line)
            self.rates = gr.LinePlot(y="rate (%)", color="metric", y_lim=[0, 100],
                                     title="Deflection and hand-over rate per day",
                                     elem_id="chart-rates", **line)
        with gr.Row():
            self.sentiment = gr.LinePlot(y="sentiment", y_lim=[-1, 1],
                                         title="Average customer sentiment per day",
                                         elem_id="chart-sentiment", **line)
            self.frustrated = gr.BarPlot(y="frustrated (%)", y_lim=[0, 100],
                                         title="Share of frustrated conversations per day",
                                         elem_id="chart-frustrated", **line)
        with gr.Row(elem_id="admin-topic-charts"):
            self.topics = gr.BarPlot(x="topic", y="questions", sort="-y", y_lim=[0, None],
                                     height=260,
                                     title="Topics by volume (answered questions)",
                                     elem_id="chart-topics-volume")
            self.negative = gr.BarPlot(x="topic", y="sentiment", sort="y", y_lim=[-1, 1],
                                       height=260, tooltip="all",
                                       title="Topics by sentiment (most negative first)",
                                       elem_id="chart-topics-sentiment")
        self.topic_note = gr.Markdown(elem_id="admin-topics-note")
        self.clusters = gr.BarPlot(x="topic", y="questions", sort="-y", y_lim=[0, None],
                                   x_label_angle=-20, height=320,
                                   title="Unanswered questions by topic (content gaps)",
                                   elem_id="chart-gaps")
        self.cluster_note = gr.Markdown(elem_id="admin-gaps-note")

    @property
    def chart_outputs(self) -> list[Any]:
        return [self.volume, self.rates, self.sentiment, self.frustrated, self.topics,
                self.negative, self.topic_note]

    @property
    def cluster_outputs(self) -> list[Any]:
        return [self.clusters, self.cluster_note]

    # --- handlers ------------------------------------------------------------------------------
    def load_banner(self, ok: bool) -> str:
        if not ok:
            return ""
        try:
            return banner_html(self.alert.status(), self.settings)
        except Exception:
            log.exception("admin: reading the frustration alert failed")
            return ('<div class="alert-banner">The alert state could not be read; the details '
                    'are in the server log.</div>')

    def load_charts(self, ok: bool, since: datetime | None) -> tuple[Any, ...]:
        if not ok:
            return self.empty_charts()
        try:
            volume, rates, sentiment, frustrated = daily_frames(self.service)
            report = topic_report(self.service.engine, categories_from(self.service.pipeline),
                                  since=since)
        except Exception:
            log.exception("admin: loading the charts failed")
            return (*self.empty_charts()[:-1],
                    "Loading the charts failed; the details are in the server log.")
        by_volume, negative = topic_frames(report)
        mood = ("" if report.unanswered_sentiment_avg is None
                else f", average sentiment {report.unanswered_sentiment_avg:+.2f}")
        note = (f"{report.answered} answered questions in {len(report.by_volume)} topics; "
                f"{report.unanswered} unanswered (fallbacks and hand-overs){mood}.")
        # One time axis for the four daily charts, the whole span, days without data too.
        end = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), time(), UTC)
        span = [(end - timedelta(days=DAYS)).timestamp(), end.timestamp()]
        daily = [gr.update(value=frame, x_lim=span)
                 for frame in (volume, rates, sentiment, frustrated)]
        return *daily, by_volume, negative, note

    def load_clusters(self, ok: bool, since: datetime | None) -> tuple[Any, str]:
        empty = pd.DataFrame(columns=["topic", "questions"])
        if not ok:
            return empty, ""
        embedder = getattr(getattr(self.service.pipeline, "retriever", None), "embedder", None)
        try:
            if embedder is None:  # a pipeline without our retriever: count, don't cluster
                n = topic_report(self.service.engine, {}, since=since).unanswered
                return empty, (f"{n} unanswered questions (fallbacks and hand-overs). Clustering "
                               "them needs the serving embedder, which this pipeline does not "
                               "have.")
            report = gap_report(self.settings, self.service.engine, embedder, since=since,
                                limit=CLUSTER_QUESTIONS)
        except Exception:
            log.exception("admin: clustering the unanswered questions failed")
            return empty, "Clustering the unanswered questions failed; see the server log."
        frame = pd.DataFrame([{"topic": _label(t.rank, t.label), "questions": t.questions}
                              for t in report.topics[:TOP]], columns=["topic", "questions"])
        note = (f"{report.questions} unanswered questions (fallbacks, hand-overs, thumbs-down; "
                f"the latest {CLUSTER_QUESTIONS} at most) in {len(report.topics)} topics; the "
                "Improve tab has the full content-gap report.")
        return frame, note

    def empty_charts(self) -> tuple[Any, ...]:
        volume, rates, sentiment, frustrated = (
            pd.DataFrame(columns=["day", "conversations"]),
            pd.DataFrame(columns=["day", "rate (%)", "metric"]),
            pd.DataFrame(columns=["day", "sentiment"]),
            pd.DataFrame(columns=["day", "frustrated (%)"]))
        return (volume, rates, sentiment, frustrated,
                pd.DataFrame(columns=["topic", "questions"]),
                pd.DataFrame(columns=["topic", "sentiment", "questions"]), "")
