"""Shared set-up of the property and schema fuzz tests (hypothesis, schemathesis).

Hypothesis keeps caches and an example database in ``.hypothesis/`` of the working directory;
tests write only to temporary folders, so its home is moved there and the example database is
off (every run draws fresh examples; a failure prints the example to reproduce it).
``fuzz_settings(n)`` is the one profile: ``n`` examples, no deadline (timings are never
asserted), function-scoped fixtures allowed (each example overwrites the test's own files).
Import it from tests as ``from fuzzing import fuzz_settings`` before drawing any example.

``FUZZ_REPORT`` is where the schema fuzz test records the requests it tried per route (by
status class); ``print_fuzz_report`` writes them at the end of the run (tests/web/conftest.py
calls it from ``pytest_terminal_summary``), so a CI log shows what was covered.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "chatbot-tests-hypothesis")


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.filter_too_much])


FUZZ_REPORT = pytest.StashKey[dict[str, Counter[str]]]()


def print_fuzz_report(config: pytest.Config, write_line: Any) -> None:
    """One line per fuzzed route: requests tried, then how many got 2xx, 4xx and 5xx."""
    report = config.stash.get(FUZZ_REPORT, None)
    if not report:
        return
    write_line("schema fuzzing: requests tried per route (2xx / 4xx / 5xx)")
    width = max(len(route) for route in report)
    for route, counts in report.items():
        total = sum(counts.values())
        write_line(f"  {route:<{width}}  {total:5d}   {counts['2xx']:4d} / {counts['4xx']:4d} / "
                   f"{counts['5xx']:d}")
    write_line(f"  total {sum(sum(c.values()) for c in report.values())} requests over "
               f"{len(report)} routes")
