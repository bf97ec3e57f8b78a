"""Schema fuzzing (schemathesis): every operation of the app's own OpenAPI schema (public, admin,
agent, OpenAI-compatible: whatever routes exist, picked up from /openapi.json) gets requests
generated from its schema, valid and invalid, on SQLite and PostgreSQL. Operations that need a
token are called both as generated (no valid token) and with a valid admin or agent token.

The property: no 5xx ever, and every 4xx is JSON with an ``error`` key (the API's
``{"error": ...}`` or OpenAI's ``{"error": {...}}`` under /v1/). The stand-in pipeline answers;
rate limits are off (a 429 would end the exploration early). The requests tried per route are
printed at the end of the run (``fuzzing.print_fuzz_report``), so a CI log shows how much was
covered. ``CHATBOT_FUZZ_EXAMPLES`` sets the valid examples per operation (default 15; half as
many invalid ones follow).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi import FastAPI
from fuzzing import FUZZ_REPORT, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.python.asgi import shutdown_lifespans
from sqlalchemy import Engine
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.knowledge.ingest import CONTROL_CHARACTERS
from chatbot.web.app import create_app

# Examples per operation: valid requests (half of them with control characters removed, so
# they get past the input guard, half naming a conversation that exists, so they get past the
# 404), then half as many invalid ones.
EXAMPLES = int(os.environ.get("CHATBOT_FUZZ_EXAMPLES", "15"))
MODES = ((schemathesis.GenerationMode.POSITIVE, EXAMPLES),
         (schemathesis.GenerationMode.NEGATIVE, max(1, EXAMPLES // 2)))
ADMIN_TOKEN = "fuzz-admin-token"


def quick_reindex(settings: Settings, *, full: bool, progress: Any) -> dict[str, Any]:
    """Stands in for a real re-index (the admin route starts one)."""
    progress(1, 1, "embedding")
    return {"version": "fuzzed", "full": full}


@pytest.fixture
def fuzz_app(settings: Settings, migrated_engine: Engine) -> FastAPI:  # noqa: F811
    limits_off = dict(rate_limit_per_minute=0, admin_rate_limit_per_minute=0,
                      sign_in_failures_per_minute=0, admin_token=ADMIN_TOKEN)
    return create_app(settings.model_copy(update=limits_off), pipeline=StandInPipeline(),
                      engine=migrated_engine, mount_ui=False, reindexer=quick_reindex)


def token_headers(app: FastAPI, operation: Any) -> list[dict[str, str] | None]:
    """The ways to call an operation: as generated, and, when it needs a token, with a valid
    one (the admin token, or an agent's for the agent routes)."""
    schemes = {name for requirement in operation.definition.raw.get("security", [])
               for name in requirement}
    variants: list[dict[str, str] | None] = [None]
    if "HTTPBearer" in schemes:
        variants.append({"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if "AgentToken" in schemes:
        if not hasattr(app.state, "fuzz_agent_token"):
            _, app.state.fuzz_agent_token = app.state.service.agents.add("Fuzz Agent")
        variants.append({"Authorization": f"Bearer {app.state.fuzz_agent_token}"})
    return variants


def without_controls(value: Any) -> Any:
    """``value`` (a JSON body, a query or path parameter) with every control character removed
    from its strings: what a well-behaved client sends."""
    if isinstance(value, str):
        return CONTROL_CHARACTERS.sub("", value)
    if isinstance(value, list):
        return [without_controls(item) for item in value]
    if isinstance(value, dict):
        return {without_controls(k): without_controls(v) for k, v in value.items()}
    return value


def realistic_sometimes(strategy: st.SearchStrategy[Any], ids: dict[str, str],
                        streams: bool) -> st.SearchStrategy[Any]:
    """The operation's cases, half of them without control characters (the other half test
    the input guard) and half of them naming a conversation and message that exist (random
    ids only ever reach the 404). A live event stream of a real conversation never ends, so
    those keep their random ids."""
    def adjust(case: Any, clean: bool, real: bool) -> Any:
        if clean:
            for part in ("body", "query", "path_parameters"):
                value = getattr(case, part, None)
                if isinstance(value, dict | list | str):
                    setattr(case, part, without_controls(value))
        if real and not streams:
            for part in ("body", "path_parameters"):
                value = getattr(case, part, None)
                if isinstance(value, dict):
                    value.update({k: v for k, v in ids.items() if k in value})
        return case

    return st.tuples(strategy, st.booleans(), st.booleans()).map(lambda drawn: adjust(*drawn))


def seed_conversation(app: FastAPI) -> dict[str, str]:
    """A conversation with a bot answer and a pending hand-over, for the cases to refer to."""
    service = app.state.service
    result = service.chat("how long is delivery", channel="web", customer_ref="fuzz")
    service.handoff(conversation_id=result.conversation_id, reason="fuzzing")
    return {"conversation_id": result.conversation_id, "message_id": result.message_id}


def problem(response: Any) -> str | None:
    """What is wrong with a response, or None: a 5xx, or a 4xx without a JSON error body."""
    if response.status_code >= 500:
        return f"server error {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        try:
            body = json.loads(response.text)
        except ValueError:
            return f"{response.status_code} without a JSON body: {response.text[:300]!r}"
        if not isinstance(body, dict) or "error" not in body:
            return f"{response.status_code} without an 'error' key: {response.text[:300]}"
    return None


def send_examples(operation: Any, cases: st.SearchStrategy[Any], examples: int, mode: str,
                  variants: list[dict[str, str] | None], counts: Counter[str]) -> None:
    """Send ``examples`` generated requests (each once per token variant); raises (after
    hypothesis has shrunk it) on the first 5xx or 4xx without a JSON error."""
    @fuzz_settings(examples)
    @given(case=cases)
    def run(case: Any) -> None:
        for headers in variants:
            where = f"{operation.label} ({mode}, {'token' if headers else 'no token'})"
            try:
                # Generous: a route may load a real model on first use.
                response = case.call(headers=headers, timeout=120)
            except Exception as error:  # the app raised: it answered 500
                counts["5xx"] += 1
                raise AssertionError(f"{where}: raised {error!r}") from error
            counts[f"{response.status_code // 100}xx"] += 1
            wrong = problem(response)
            assert wrong is None, f"{where}: {wrong}"

    run()


def fuzz_operation(app: FastAPI, operation: Any, counts: Counter[str]) -> list[str]:
    """Run the generated requests of one operation; the problems found (empty when none)."""
    variants = token_headers(app, operation)
    ids = seed_conversation(app)
    found: list[str] = []
    for mode, examples in MODES:
        cases = operation.as_strategy(generation_mode=mode)
        if mode == schemathesis.GenerationMode.POSITIVE:
            cases = realistic_sometimes(cases, ids, operation.path.endswith("/events"))
        try:
            send_examples(operation, cases, examples, mode.value, variants, counts)
        except Unsatisfiable:  # nothing invalid to send (e.g. a lone string path parameter)
            continue
        except Exception as error:  # shrunk (one failure, or a group): report, go on
            found += [line for line in str(error).splitlines() if " (positive, " in line
                      or " (negative, " in line][:3] or [repr(error)[:300]]
    return found


def test_no_route_answers_5xx_and_every_4xx_is_a_json_error(
        fuzz_app: FastAPI, database_url: str, request: pytest.FixtureRequest) -> None:  # noqa: F811
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    backend = database_url.split(":", 1)[0].split("+", 1)[0]
    report: dict[str, Counter[str]] = request.config.stash.setdefault(FUZZ_REPORT, {})
    problems: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10  # the schema was read
    try:
        for operation in operations:
            counts: Counter[str] = report.setdefault(f"{backend}  {operation.label}", Counter())
            problems += fuzz_operation(fuzz_app, operation, counts)
    finally:
        shutdown_lifespans()  # schemathesis keeps the app started; stop it with its database
    assert not problems, "\n".join(problems)
