"""Evaluation metrics: ROUGE-L and latency percentiles.

Percentiles are numpy's (linear interpolation, the same as PostgreSQL's ``percentile_cont``
and the admin statistics), so every report computes them one way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 on lower-cased alphanumeric tokens (the rouge-score package's rougeL)."""
    a, b = _TOKEN.findall(candidate.lower()), _TOKEN.findall(reference.lower())
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)  # LCS by dynamic programming, one row at a time
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def percentile_ms(values: Sequence[float], q: float, digits: int = 2) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, rounded; None when there are none."""
    if not len(values):
        return None
    return round(float(np.percentile(values, q)), digits)
