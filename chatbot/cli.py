"""The `chatbot` command line: one typer app with short verbs.

Each command parses its arguments, calls the module that owns the work and prints the result.
A ChatbotError becomes one clean line on stderr and exit status 1; the stack trace goes to the
log only. Heavy imports happen inside the commands so `chatbot --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

import typer

from chatbot.config import Settings, describe_settings
from chatbot.errors import ChatbotError

app = typer.Typer(
    help="Self-hosted customer-service chatbot.", no_args_is_help=True, add_completion=False
)
config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")

log = logging.getLogger("chatbot")


def _settings() -> Settings:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings


def _fail(error: BaseException) -> NoReturn:
    """Print one clean line and exit non-zero; the traceback goes to the debug log only."""
    log.debug("command failed", exc_info=error)
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(1)


@config_app.command("show")
def config_show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print every setting with its environment variable, value and description."""
    rows = describe_settings(_settings())
    if as_json:
        typer.echo(json.dumps({name: value for name, value, _ in rows}, indent=2))
        return
    width = max(len(name) for name, _, _ in rows)
    for name, value, description in rows:
        typer.echo(f"{name:<{width}}  {value}\n{'':<{width}}  {description}")


@app.command()
def reindex(
    full: bool = typer.Option(False, "--full", help="Re-embed everything, ignoring the cache."),
) -> None:
    """Re-read the knowledge base and publish a new index version if anything changed."""
    from tqdm import tqdm

    from chatbot.index import reindex as run_reindex

    settings = _settings()
    bar: tqdm | None = None

    def progress(done: int, total: int, stage: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=stage, unit="phrasing")
        bar.update(done - bar.n)

    try:
        report = run_reindex(settings, full=full, progress=progress)
    except ChatbotError as error:
        _fail(error)
    finally:
        if bar is not None:
            bar.close()
    typer.echo(report.summary())


@app.command()
def search(
    question: str = typer.Argument(..., help="What a customer would ask."),
    k: int = typer.Option(5, "--k", min=1, max=50, help="Hits to show."),
    mode: str = typer.Option("hybrid", help="hybrid, dense or keyword."),
) -> None:
    """Show the top hits for a question with their scores (for debugging retrieval)."""
    from chatbot.retrieve import Retriever

    if mode not in ("hybrid", "dense", "keyword"):
        _fail(ChatbotError(f"--mode must be hybrid, dense or keyword, not {mode!r}"))
    try:
        hits = Retriever(_settings()).search(question, k=k, mode=mode)  # type: ignore[arg-type]
    except ChatbotError as error:
        _fail(error)
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


@app.command("eval-retrieval")
def eval_retrieval_command(
    kb: Path = typer.Option(..., "--kb", help="CSV whose rows become the documents."),
    queries: Path = typer.Option(..., "--queries", help="CSV of test queries."),
    text_col: str = typer.Option(..., "--text-col", help="Column with the text."),
    label_col: str = typer.Option(..., "--label-col", help="Column with the label."),
    k: int = typer.Option(5, "--k", min=1, max=50, help="Cut-off for recall@k and MRR."),
    mode: str = typer.Option("hybrid", help="hybrid, dense, keyword, or all three."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the JSON here."),
) -> None:
    """Recall@1, recall@k, MRR and latency of retrieval on a labelled CSV pair."""
    from chatbot.evaluate import eval_retrieval

    modes = ("hybrid", "dense", "keyword") if mode == "all" else (mode,)
    if any(m not in ("hybrid", "dense", "keyword") for m in modes):
        _fail(ChatbotError(f"--mode must be hybrid, dense, keyword or all, not {mode!r}"))
    try:
        result = eval_retrieval(
            kb, queries, text_col=text_col, label_col=label_col, settings=_settings(), k=k,
            modes=modes, progress=True,  # type: ignore[arg-type]
        )
    except ChatbotError as error:
        _fail(error)
    text = json.dumps(result, indent=2)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    typer.echo(text)


# --- more commands are registered above this line ---


def main() -> None:
    try:
        app()
    except ChatbotError as error:  # errors raised outside a command body
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)

