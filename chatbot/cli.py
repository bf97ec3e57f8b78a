"""The `chatbot` command line: one typer app with short verbs.

Each command parses its arguments, calls the module that owns the work and prints the result.
Commands are registered with ``_command``: a ChatbotError (a bad CHATBOT_* setting included)
becomes one clean line on stderr and exit status 1; the stack trace goes to the log only. Heavy
imports happen inside the commands so `chatbot --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import typer
from pydantic import ValidationError

from chatbot.config import Settings, describe_settings
from chatbot.errors import ChatbotError, ConfigError

# No local variables in tracebacks: they would print settings and URLs, passwords included.
app = typer.Typer(
    help="Self-hosted customer-service chatbot.", no_args_is_help=True, add_completion=False,
    pretty_exceptions_show_locals=False, rich_markup_mode="markdown",
)
config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")

log = logging.getLogger("chatbot")
Command = TypeVar("Command", bound=Callable[..., Any])

# Options several commands share.
KbCsv = Annotated[Path, typer.Option("--kb", help="CSV whose rows become the documents.")]
TextCol = Annotated[str, typer.Option("--text-col", help="Column with the text.")]
LabelCol = Annotated[str, typer.Option("--label-col", help="Column with the label.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the JSON here.")]


def _command(group: typer.Typer, name: str | None = None) -> Callable[[Command], Command]:
    """Register ``function`` as ``group``'s command ``name``: a ChatbotError it raises becomes
    one clean line on stderr and exit status 1; the traceback goes to the debug log only."""

    def register(function: Command) -> Command:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except ChatbotError as error:
                log.debug("command failed", exc_info=error)
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(1) from None

        group.command(name)(run)
        return function

    return register


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as error:  # a bad CHATBOT_* variable: name it, never echo its value
        raise ConfigError("bad settings: " + "; ".join(
            (f"CHATBOT_{str(e['loc'][0]).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ") for e in error.errors())) from error
    # Our own log at the configured level; libraries (faiss, transformers) only when they warn.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("chatbot").setLevel(settings.log_level.upper())
    return settings


@_command(config_app, "show")
def config_show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print every setting with its environment variable, value and description."""
    rows = describe_settings(_settings())
    if as_json:
        typer.echo(json.dumps({name: value for name, value, _ in rows}, indent=2))
        return
    width = max(len(name) for name, _, _ in rows)
    for name, value, description in rows:
        typer.echo(f"{name:<{width}}  {value}\n{'':<{width}}  {description}")


@_command(app)
def reindex(
    full: bool = typer.Option(False, "--full", help="Re-embed everything, ignoring the cache."),
) -> None:
    """Re-read the knowledge base and approved suggestions; publish a new index if they changed.

    The approved suggestions are read from the database; unchanged documents keep their vectors.
    """
    from tqdm import tqdm

    from chatbot.learning.knowledge import reindex_from_settings as run_reindex

    settings = _settings()
    bar: tqdm | None = None

    def progress(done: int, total: int, stage: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=stage, unit="phrasing")
        bar.update(done - bar.n)

    try:
        report = run_reindex(settings, full=full, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    typer.echo(report.summary())


@_command(app)
def search(
    question: str = typer.Argument(..., help="What a customer would ask."),
    k: int = typer.Option(5, "--k", min=1, max=50, help="Hits to show."),
    mode: str = typer.Option("hybrid", help="hybrid, dense or keyword."),
) -> None:
    """Show the top hits for a question with their scores (for debugging retrieval)."""
    from chatbot.retrieval.search import Mode, Retriever

    if mode not in get_args(Mode):
        raise ConfigError(f"--mode must be hybrid, dense or keyword, not {mode!r}")
    hits = Retriever(_settings()).search(question, k=k, mode=mode)  # type: ignore[arg-type]
    for hit in hits:
        dense = f"{hit.dense_score:.3f}" if hit.dense_score is not None else "-"
        keyword = f"{hit.keyword_score:.2f}" if hit.keyword_score is not None else "-"
        typer.echo(
            f"{hit.rank}. [{hit.document.kind} {hit.document.record_id}] score={hit.score:.3f} "
            f"dense={dense} bm25={keyword}  ({hit.document.source})"
        )
        typer.echo(f"   Q: {hit.document.question}")
        if hit.matched and hit.matched != hit.document.question:
            typer.echo(f"   matched: {hit.matched}")
        typer.echo(f"   A: {hit.document.answer[:200]}")


@_command(app, "eval-retrieval")
def eval_retrieval_command(
    kb: KbCsv,
    queries: Annotated[Path, typer.Option("--queries", help="CSV of test queries.")],
    text_col: TextCol,
    label_col: LabelCol,
    k: int = typer.Option(5, "--k", min=1, max=50, help="Cut-off for recall@k and MRR."),
    mode: str = typer.Option("hybrid", help="hybrid, dense, keyword, or all three."),
    json_out: JsonOut = None,
) -> None:
    """Recall@1, recall@k, MRR and latency of retrieval on a labelled CSV pair."""
    from chatbot.evaluation.retrieval import eval_retrieval
    from chatbot.retrieval.search import Mode

    modes = get_args(Mode) if mode == "all" else (mode,)
    if any(m not in get_args(Mode) for m in modes):
        raise ConfigError(f"--mode must be hybrid, dense, keyword or all, not {mode!r}")
    result = eval_retrieval(kb, queries, text_col=text_col, label_col=label_col,
                            settings=_settings(), k=k, modes=modes, progress=True)
    _print_json(result, json_out)


db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@_command(db_app, "upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the database (CHATBOT_DATABASE_URL, default SQLite under var/) to a revision."""
    from chatbot.conversations.engine import upgrade

    settings = _settings()
    upgrade(settings, revision)
    typer.echo(f"database at {revision}: {settings.masked_database_url}")


@_command(app)
def purge(
    older_than: float | None = typer.Option(
        None, "--older-than", metavar="DAYS",
        help="Delete conversations inactive for more than DAYS (default: "
        "CHATBOT_RETENTION_DAYS)."),
) -> None:
    """Delete conversations inactive for longer than the retention period.

    Messages, retrieval hits, feedback and hand-overs go with them; the server does the same
    every CHATBOT_RETENTION_INTERVAL_S.
    """
    from chatbot.conversations.engine import check_schema, make_engine
    from chatbot.conversations.retention import purge as run_purge

    settings = _settings()
    if older_than is None and not settings.retention_days:
        raise ConfigError("nothing to purge: CHATBOT_RETENTION_DAYS is 0 (keep forever); set "
                          "it or pass --older-than DAYS")
    days = settings.retention_days if older_than is None else older_than
    engine = make_engine(settings)
    try:
        check_schema(engine)
        deleted = run_purge(engine.begin, days)
    finally:
        engine.dispose()
    typer.echo(f"deleted {deleted} conversation(s) inactive for more than {days:g} days")


@_command(app)
def serve(
    host: str | None = typer.Option(None, help="Bind address (default: CHATBOT_HOST)."),
    port: int | None = typer.Option(None, help="Port (default: CHATBOT_PORT)."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, max=64, help="Processes serving the port (default: "
        "CHATBOT_WORKERS); each loads and warms its models before it takes traffic."),
    build_index: bool = typer.Option(True, help="Build the index first when none exists."),
) -> None:
    """Migrate the database, build the index if missing, and serve UI, API and widget."""
    import os

    import uvicorn

    from chatbot.config import check_bind
    from chatbot.conversations.engine import check_schema, make_engine, upgrade
    from chatbot.web.app import create_app

    settings = _settings()
    host = host or settings.host
    workers = workers or settings.workers
    check_bind(settings, host)  # the dev admin token serves loopback only
    upgrade(settings)
    if build_index:
        from chatbot.learning.knowledge import reindex_from_settings
        from chatbot.retrieval.index import active_version

        if active_version(settings) is None:
            typer.echo("no index yet: building it from " + str(settings.knowledge_base))
            typer.echo(reindex_from_settings(settings).summary())
    port, level = port or settings.port, settings.log_level.lower()
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=level)
        return
    engine = make_engine(settings)
    check_schema(engine)  # what each worker's create_app checks, once, readably
    engine.dispose()
    if not settings.torch_threads:
        # Each worker's models get an equal share of the cores: N workers each using every
        # core would fight for them (DESIGN.md: thread oversubscription).
        os.environ["CHATBOT_TORCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    # An app object cannot cross into another process: each worker builds its own from the
    # same environment and runs the start-up warm-up before uvicorn lets it accept.
    uvicorn.run("chatbot.web.app:app_from_env", factory=True, workers=workers, host=host,
                port=port, log_level=level)


@_command(app)
def chat() -> None:
    """Chat in the terminal; each reply shows its route, confidence and sources."""
    from chatbot.answering.pipeline import build_pipeline, terminal_chat

    terminal_chat(build_pipeline(_settings()), input, typer.echo)


@_command(app)
def calibrate(
    out_of_scope: Path | None = typer.Option(
        None, "--out-of-scope", help="Off-topic questions, one per line "
        "(default: out_of_scope.txt in the knowledge base)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print, do not store."),
    if_needed: bool = typer.Option(
        False, "--if-needed", help="Do nothing when the active index version was already "
        "calibrated for CHATBOT_TARGET_PRECISION (used by `make run`)."),
) -> None:
    """Pick routing thresholds for CHATBOT_TARGET_PRECISION and store them with the index."""
    from chatbot.answering.calibrate import calibrate as run_calibrate
    from chatbot.retrieval.index import write_thresholds

    settings = _settings()
    if if_needed and _calibrated(settings):
        typer.echo("thresholds already calibrated for this index version")
        return
    thresholds, report = run_calibrate(settings, out_of_scope=out_of_scope)
    if not dry_run:
        report["stored_in"] = str(write_thresholds(settings, thresholds.to_json()))
    typer.echo(json.dumps(report, indent=2))


def _calibrated(settings: Settings) -> bool:
    """The active version holds thresholds calibrated on it, for the configured precision."""
    from chatbot.retrieval.index import active_path

    manifest = json.loads((active_path(settings) / "manifest.json").read_text())
    thresholds = manifest.get("thresholds") or {}
    target = (thresholds.get("metrics") or {}).get("target_precision")
    from chatbot.answering.calibrate import make_reranker
    from chatbot.answering.policy import COSINE

    reranker = make_reranker(settings)  # thresholds of another scorer do not count
    scorer = COSINE if reranker is None else reranker.scorer_id
    return (
        bool(thresholds) and "calibrated_on_version" not in thresholds
        and target == settings.target_precision
        and thresholds.get("scorer", COSINE) == scorer
    )


@_command(app, "eval-routing")
def eval_routing_command(
    kb: KbCsv,
    in_scope: Annotated[Path, typer.Option("--in-scope", help="CSV of in-scope test questions.")],
    out_of_scope: Annotated[Path, typer.Option("--out-of-scope",
                                               help="CSV of off-topic questions.")],
    text_col: TextCol,
    label_col: LabelCol,
    calibrate_in: Path | None = typer.Option(None, "--calibrate-in", help="In-scope CSV to "
                                             "calibrate on (else the default thresholds)."),
    calibrate_out: Path | None = typer.Option(None, "--calibrate-out",
                                              help="Out-of-scope CSV to calibrate on."),
    json_out: JsonOut = None,
) -> None:
    """Share of in-scope questions answered (correctly) and of off-topic ones declined."""
    from chatbot.evaluation.answers import eval_routing

    result = eval_routing(kb, in_scope, out_of_scope, text_col=text_col, label_col=label_col,
                          settings=_settings(), calibrate_in=calibrate_in,
                          calibrate_out=calibrate_out, progress=True)
    _print_json(result, json_out)


@_command(app, "eval-answers")
def eval_answers_command(
    kb: Annotated[Path, typer.Option("--kb", help="CSV of question/answer rows to answer "
                                     "from.")],
    queries: Annotated[Path, typer.Option("--queries", help="CSV of test questions and "
                                          "references.")],
    question_col: Annotated[str, typer.Option("--question-col",
                                              help="Column with the question.")],
    answer_col: Annotated[str, typer.Option("--answer-col", help="Column with the answer.")],
    generator: str = typer.Option("finetuned", "--generator", help="base, finetuned or PATH "
                                  "(an adapter or a model folder)."),
    mode: str = typer.Option("pipeline", "--mode", help="pipeline (routing and support gate), "
                             "generate (always generate) or verbatim (nearest neighbour)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Questions evaluated at most "
                                     "(evenly spread over the file)."),
    json_out: JsonOut = None,
) -> None:
    """ROUGE-L, groundedness, routes, latency and tokens/s of answers against references."""
    from chatbot.evaluation.answers import Mode, eval_answers

    if mode not in get_args(Mode):
        raise ConfigError(f"--mode must be pipeline, generate or verbatim, not {mode!r}")
    result = eval_answers(kb, queries, question_col=question_col, answer_col=answer_col,
                          settings=_settings(), generator=generator, mode=mode,  # type: ignore[arg-type]
                          limit=limit, progress=True)
    _print_json(result, json_out)


@_command(app, "eval-demo")
def eval_demo_command(
    split: str = typer.Option("test", "--split", help="test (report) or dev (tune)."),
    generator: str = typer.Option("none", "--generator", help="none (routing only, fast), "
                                  "finetuned, base or PATH (an adapter or a model folder)."),
    data: Path | None = typer.Option(None, "--data", help="Held-out JSONL (default: "
                                     "bench/data/demo_heldout.jsonl)."),
    json_out: JsonOut = None,
) -> None:
    """Correct, wrong and fallback answers on the held-out demo set, over the active index.

    Run `chatbot reindex` on the demo knowledge base first. Only an FAQ citation can be
    correct: an answer citing past dialogues only counts as wrong (see
    wrong_in_scope_citing_only_dialogues in the report).
    """
    from chatbot.evaluation.demo import DEFAULT_DATA, eval_demo

    # read_demo checks --split (and names the file and line of a bad row) before any model loads.
    result = eval_demo(_settings(), path=data or DEFAULT_DATA, split=split, generator=generator,
                       progress=True)
    _print_json(result, json_out)


def _print_json(result: dict, json_out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    typer.echo(text)


finetune_app = typer.Typer(
    help="Fine-tune the generator, the embedder, the reranker or the verifier.",
    no_args_is_help=True)
app.add_typer(finetune_app, name="finetune")


@_command(finetune_app, "generator")
def finetune_generator_command(
    output: Path | None = typer.Option(
        None, "--output",
        help="Where to save (default: the shipped adapter, "
        "chatbot/generation/adapters/smollm2-pinecrest)."),
    full: bool = typer.Option(False, "--full", help="Full fine-tuning instead of LoRA."),
    steps: int = typer.Option(300, "--steps", min=1, help="Optimizer steps at most."),
    minutes: float = typer.Option(0.0, "--minutes", min=0, help="Training time budget (0: none)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Examples per step."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (default 2e-4 LoRA, "
                                    "2e-5 full)."),
    rank: int = typer.Option(8, "--rank", min=1, help="LoRA rank."),
    bitext: Path | None = typer.Option(None, "--bitext", help="Also train on the Bitext CSV's "
                                       "80% training split."),
    bitext_limit: int = typer.Option(1500, "--bitext-limit", min=0,
                                     help="Bitext pairs used at most (evenly spread)."),
    model: str = typer.Option("", "--model", help="Base model (default: CHATBOT_GENERATOR_MODEL "
                              "or SmolLM2)."),
    max_length: int = typer.Option(640, "--max-length", min=64, help="Tokens per example; "
                                   "longer prompts lose their start."),
    cpu_bf16: bool = typer.Option(False, "--cpu-bf16", help="bf16 autocast on the CPU (about "
                                  "2x faster where the CPU has native bf16: AVX512-BF16, AMX)."),
) -> None:
    """LoRA (or full) fine-tuning on the knowledge base's dialogues and FAQs."""
    from chatbot.training.generator import FinetuneConfig, finetune_generator

    config = FinetuneConfig(full=full, max_steps=steps, time_budget_min=minutes,
                            batch_size=batch_size, lora_r=rank, lora_alpha=2 * rank,
                            lr=lr or (2e-5 if full else 2e-4),
                            bitext=str(bitext or ""), bitext_limit=bitext_limit, model=model,
                            max_length=max_length, cpu_bf16=cpu_bf16)
    if output is not None:
        config.output = str(output)
    metrics = finetune_generator(_settings(), config)
    typer.echo(json.dumps(metrics, indent=2))
    typer.echo(f"saved to {config.output}")


@_command(finetune_app, "embedder")
def finetune_embedder_command(
    output: Path | None = typer.Option(
        None, "--output", help="Where to save the result (default var/models/minilm-finetuned, "
        "with --tuning var/models/embedder-tuning)."),
    epochs: int = typer.Option(0, "--epochs", min=0, help="Passes over the training pairs "
                               "(0: one, three with --tuning)."),
    batch_size: int = typer.Option(32, "--batch-size", min=2, help="Pairs per step (the other "
                                   "pairs of a batch are its negatives)."),
    bitext: Path | None = typer.Option(None, "--bitext", help="Also train on Bitext's 80% split."),
    labelled: Path | None = typer.Option(
        None, "--labelled", help="Train on this CSV of labelled queries instead (pairs of texts "
        "with the same label); needs --text-col and --label-col."),
    text_col: str = typer.Option("text", "--text-col", help="--labelled: the text column."),
    label_col: str = typer.Option("label", "--label-col", help="--labelled: the label column."),
    tuning: bool = typer.Option(
        False, "--tuning", help="Train a compact tuning for routing instead: the top "
        "--train-layers layers on this knowledge base's FAQ phrasings (use it with "
        "CHATBOT_EMBEDDER_TUNING=OUTPUT, `chatbot reindex` and `chatbot calibrate`)."),
    train_layers: int = typer.Option(3, "--train-layers", min=1,
                                     help="--tuning: how many top layers to train."),
    lr: float = typer.Option(0.0, "--lr", min=0.0, help="Learning rate (AdamW; 0: 2e-5, "
                             "1e-4 with --tuning, which trains fewer layers)."),
) -> None:
    """Contrastive fine-tuning of the retriever's embedder, with recall@1 before and after.

    Trains on (question, answer) pairs; use the result with CHATBOT_EMBEDDING_MODEL=OUTPUT and
    `chatbot reindex --full`. With --tuning, trains a few MB of upper layers on the FAQ
    phrasings instead (three epochs unless --epochs says otherwise).
    """
    from chatbot.evaluation.datasets import read_columns
    from chatbot.training.embedder import finetune_embedder, tune_embedder

    if tuning:
        if labelled is not None or bitext is not None:
            raise ConfigError("--tuning trains on the knowledge base's phrasings: drop "
                              "--labelled and --bitext")
        out = output or Path("var/models/embedder-tuning")
        typer.echo(json.dumps(tune_embedder(_settings(), output=out, epochs=epochs or 3,
                                            batch_size=batch_size, train_layers=train_layers,
                                            lr=lr or 1e-4),
                              indent=2))
        return
    rows = None if labelled is None else [
        (t, lab) for t, lab in read_columns(labelled, (text_col, label_col))]
    metrics = finetune_embedder(_settings(), output=output or Path("var/models/minilm-finetuned"),
                                epochs=epochs or 1, lr=lr or 2e-5,
                                batch_size=batch_size, bitext=bitext, labelled=rows)
    typer.echo(json.dumps(metrics, indent=2))


@_command(finetune_app, "reranker")
def finetune_reranker_command(
    output: Path = typer.Option(Path("var/models/reranker"), "--output",
                                help="Where to save the compact weights (use them with "
                                "CHATBOT_RERANKER=OUTPUT, then `chatbot calibrate`)."),
    epochs: int = typer.Option(3, "--epochs", min=1, help="Passes over the training pairs."),
    batch_size: int = typer.Option(16, "--batch-size", min=2, help="Pairs per step."),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate of the transformer layers."),
    head_lr: float = typer.Option(2e-3, "--head-lr", help="Peak learning rate of the new head."),
    negatives: int = typer.Option(4, "--negatives", min=1, help="Retrieved wrong candidates "
                                  "per question."),
    minutes: float = typer.Option(0.0, "--minutes", min=0, help="Training time budget (0: "
                                  "none)."),
    train_layers: int = typer.Option(6, "--train-layers", min=0, max=6, help="Top transformer "
                                     "layers trained (fewer: smaller file, less fit)."),
    bitext: Path | None = typer.Option(None, "--bitext", help="Also train on Bitext's 80% split "
                                       "(public support requests and responses)."),
    bitext_limit: int = typer.Option(2000, "--bitext-limit", min=0,
                                     help="Bitext requests used at most (evenly spread)."),
) -> None:
    """Train the second-stage reranker on the knowledge base (FAQ phrasings, dialogues and
    out-of-scope questions against retrieved hard negatives); prints the held-out top-1 in
    retrieval order and reranked. Minutes to tens of minutes on a 2-core CPU."""
    from chatbot.training.reranker import finetune_reranker

    metrics = finetune_reranker(_settings(), output=output, epochs=epochs, batch_size=batch_size,
                                lr=lr, head_lr=head_lr, negatives=negatives,
                                train_layers=train_layers, minutes=minutes, bitext=bitext,
                                bitext_limit=bitext_limit)
    typer.echo(json.dumps(metrics, indent=2))


@_command(finetune_app, "verifier")
def finetune_verifier_command(
    output: Path = typer.Option(Path("var/models/verifier"), "--output",
                                help="Where to save the head (use it with "
                                "CHATBOT_VERIFIER=OUTPUT; the calibrated threshold is stored "
                                "with it)."),
    epochs: int = typer.Option(8, "--epochs", min=1, help="Passes over the training pairs."),
    batch_size: int = typer.Option(32, "--batch-size", min=2, help="Pairs per step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
    rounds: int = typer.Option(2, "--rounds", min=1, help="Draws of rewrites and perturbations "
                               "per sentence (more: more pairs, longer training)."),
) -> None:
    """Train the support gate's grounding verifier on synthetic pairs from the knowledge base
    (faithful rewrites of its answers against perturbations of them), with the threshold
    calibrated on validation FAQs and rates on held-out FAQs. About 15 minutes on 2 CPU cores."""
    from chatbot.training.verifier import finetune_verifier

    metrics = finetune_verifier(_settings(), output=output, epochs=epochs, batch_size=batch_size,
                                lr=lr, rounds=rounds)
    typer.echo(json.dumps(metrics, indent=2))


agents_app = typer.Typer(help="Support-team agents: who may answer hand-overs in the inbox.",
                         no_args_is_help=True)
app.add_typer(agents_app, name="agents")


def _desk():  # type: ignore[no-untyped-def]
    from chatbot.conversations.agents import AgentDesk
    from chatbot.conversations.engine import check_schema, make_engine

    settings = _settings()
    engine = make_engine(settings)
    check_schema(engine)
    return AgentDesk.standalone(settings, engine)


@_command(agents_app, "add")
def agents_add(name: str = typer.Argument(..., help="The agent's name, as customers see it.")
               ) -> None:
    """Create an agent and print their token (once: only its hash is stored)."""
    agent, token = _desk().add(name)
    typer.echo(f"agent {agent.name} added. Their token (shown only now; give it to them "
               "privately):")
    typer.echo(token)
    typer.echo("They sign in on the Inbox tab, or call /api/v1/agent/... with "
               "Authorization: Bearer <token>.")


@_command(agents_app, "list")
def agents_list() -> None:
    """Every agent: name, active or removed, when last seen."""
    agents = _desk().list_agents()
    if not agents:
        typer.echo("no agents yet: chatbot agents add NAME")
    for agent in agents:
        seen = agent.last_seen_at.strftime("%Y-%m-%d %H:%M UTC") if agent.last_seen_at \
            else "never"
        state = "active" if agent.active else "removed"
        typer.echo(f"{agent.name}\t{state}\tlast seen {seen}")


@_command(agents_app, "remove")
def agents_remove(name: str = typer.Argument(..., help="The agent's name.")) -> None:
    """Turn an agent's token off at once; their claimed hand-overs go back to the queue."""
    agent = _desk().remove(name)
    typer.echo(f"agent {agent.name} removed: their token no longer works")


# --- more commands are registered above this line ---


def main() -> None:
    try:
        app()
    except ChatbotError as error:  # errors raised outside a command body
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)
