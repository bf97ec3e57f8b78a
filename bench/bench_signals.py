"""Frustration signals: VADER alone against VADER plus support cues, on our labelled set.
Writes bench/results/signals.json and signals.md.

    .venv/bin/python bench/bench_signals.py          # evaluate the shipped constants
    .venv/bin/python bench/bench_signals.py --fit    # refit on dev and print the constants

Data: bench/data/frustration.jsonl (labelling rule in bench/data/README.md), split 40% dev /
60% test, stratified by kind. Everything that is chosen is chosen on dev only: the logistic
weights of ``chatbot.answering.signals`` (L2 penalty by 5-fold cross-validation), its two
thresholds (on out-of-fold dev scores), and VADER's compound cut-off for the baseline. The test
split is only scored. Cue ablations refit on dev without the cue, the same way.

Targets from the issue: F1 >= 0.85 and calm complaints escalated <= 5% (on test).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, load_average, write_report  # first: offline env, checkout on sys.path

from chatbot.answering import signals as sig
from chatbot.types import Turn

DATA = ROOT / "bench" / "data" / "frustration.jsonl"
FOLDS = 5
PENALTIES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # L2 strengths tried by cross-validation
MAX_CALM_ESCALATED = 0.05  # the issue's target, used as the constraint when picking thresholds
CALM = "calm_complaint"


@dataclass(frozen=True)
class Item:
    id: str
    split: str
    kind: str
    frustrated: bool
    strong: bool
    history: tuple[Turn, ...]
    message: str


def load(path: Path = DATA) -> list[Item]:
    items = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            history = tuple(Turn(t["role"], t["text"], t.get("route")) for t in row["history"])
            items.append(Item(row["id"], row["split"], row["kind"], bool(row["frustrated"]),
                              bool(row.get("strong", False)), history, row["message"]))
        except KeyError as error:
            raise SystemExit(f"{path}:{line_no}: missing field {error}") from error
    return items


# --- metrics ------------------------------------------------------------------------------------


def prf(truth: Sequence[bool], predicted: Sequence[bool]) -> dict[str, float]:
    t, p = np.asarray(truth, bool), np.asarray(predicted, bool)
    tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "tp": tp, "fp": fp, "fn": fn, "tn": int((~t & ~p).sum())}


def calm_escalated(items: Sequence[Item], predicted: Sequence[bool]) -> float:
    flags = [p for it, p in zip(items, predicted, strict=True) if it.kind == CALM]
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def pick_threshold(scores: np.ndarray, items: Sequence[Item], truth: Sequence[bool],
                   higher_is_positive: bool = True, calm_cap: float | None = None) -> float:
    """The cut-off with the best F1 (ties: the stricter one), optionally only among cut-offs
    that escalate at most ``calm_cap`` of the calm complaints. The cut-off sits halfway between
    two neighbouring scores, so it does not hinge on one item's exact value."""
    signed = scores if higher_is_positive else -scores
    values = np.unique(signed)
    cuts = (values[1:] + values[:-1]) / 2 if len(values) > 1 else values
    best: tuple[float, float] | None = None
    for cut in cuts:
        predicted = signed >= cut
        if calm_cap is not None and calm_escalated(items, predicted) > calm_cap:
            continue
        f1 = prf(truth, predicted)["f1"]
        if best is None or f1 > best[0] or (f1 == best[0] and cut > best[1]):
            best = (f1, float(cut))
    assert best is not None, "no cut-off meets the constraint"
    return best[1] if higher_is_positive else -best[1]


# --- the logistic fits --------------------------------------------------------------------------


def fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float,
                 free: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """L2-regularised logistic regression by Newton's method (IRLS); the bias is not penalised.
    Weights not marked ``free`` are kept >= 0 (active set: a weight that comes out negative is
    fixed at 0 and the rest refitted). Returns (bias, weights)."""
    free = np.zeros(x.shape[1], bool) if free is None else free
    active = np.ones(x.shape[1], bool)
    while True:
        design = np.hstack([np.ones((len(x), 1)), x[:, active]])
        ridge = penalty * np.eye(design.shape[1])
        ridge[0, 0] = 0.0
        beta = np.zeros(design.shape[1])
        for _ in range(100):
            p = 1.0 / (1.0 + np.exp(-design @ beta))
            gradient = design.T @ (p - y) + ridge @ beta
            hessian = design.T @ (design * (p * (1 - p))[:, None]) + ridge
            step = np.linalg.solve(hessian, gradient)
            beta -= step
            if np.abs(step).max() < 1e-10:
                break
        weights = np.zeros(x.shape[1])
        weights[active] = beta[1:]
        negative = (weights < 0) & ~free
        if not negative.any():
            return float(beta[0]), weights
        active &= ~negative


def folds(y: np.ndarray, k: int = FOLDS) -> np.ndarray:
    """Fold number of each row, stratified by label, deterministic (rows in file order)."""
    out = np.zeros(len(y), int)
    for label in (False, True):
        rows = np.flatnonzero(y == label)
        out[rows] = np.arange(len(rows)) % k
    return out


def out_of_fold(x: np.ndarray, y: np.ndarray, penalty: float, free: np.ndarray) -> np.ndarray:
    fold = folds(y)
    scores = np.zeros(len(y))
    for f in range(FOLDS):
        train, held = fold != f, fold == f
        bias, w = fit_logistic(x[train], y[train], penalty, free)
        scores[held] = 1.0 / (1.0 + np.exp(-(bias + x[held] @ w)))
    return scores


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass(frozen=True)
class Logistic:
    """One fitted formula: its weights, the penalty chosen by cross-validation, and the
    out-of-fold scores of the dev rows (what thresholds are picked on)."""

    bias: float
    weights: dict[str, float]
    penalty: float
    cv_log_loss: dict[str, float]
    oof: np.ndarray

    def scores(self, x: dict[str, np.ndarray]) -> np.ndarray:
        z = self.bias + sum(w * x[n] for n, w in self.weights.items())
        return 1.0 / (1.0 + np.exp(-z))


def fit_formula(x: dict[str, np.ndarray], labels: Sequence[bool],
                features: Sequence[str]) -> Logistic:
    matrix = np.column_stack([x[n] for n in features])
    free = np.array([n in sig.AGAINST_FRUSTRATION for n in features])
    y = np.array(labels, float)
    losses = {str(c): round(log_loss(y, out_of_fold(matrix, y, c, free)), 4) for c in PENALTIES}
    penalty = min(PENALTIES, key=lambda c: (losses[str(c)], -c))  # ties: the stronger penalty
    bias, w = fit_logistic(matrix, y, penalty, free)
    return Logistic(round(bias, 3), {n: round(float(v), 3) for n, v in zip(features, w,
                                                                             strict=True)},
                    penalty, losses, out_of_fold(matrix, y, penalty, free))


@dataclass(frozen=True)
class Fit:
    frustration: Logistic
    threshold: float
    strong: Logistic
    strong_threshold: float

    def frustrated(self, x: dict[str, np.ndarray]) -> np.ndarray:
        return self.frustration.scores(x) >= self.threshold

    def strongly(self, x: dict[str, np.ndarray]) -> np.ndarray:
        return self.frustrated(x) & (self.strong.scores(x) >= self.strong_threshold)


def fit(dev: Sequence[Item], x: dict[str, np.ndarray], features: Sequence[str] = sig.FEATURES
        ) -> Fit:
    """Both formulas and their thresholds from the dev items only (``x`` holds dev rows)."""
    frustration = fit_formula(x, [it.frustrated for it in dev], features)
    threshold = pick_threshold(frustration.oof, dev, [it.frustrated for it in dev],
                               calm_cap=MAX_CALM_ESCALATED)
    strong = fit_formula(x, [it.strong for it in dev], features)
    # Only a customer the first formula calls frustrated can be strongly frustrated.
    gated = np.where(frustration.oof >= threshold, strong.oof, 0.0)
    strong_threshold = pick_threshold(gated, dev, [it.strong for it in dev])
    return Fit(frustration, round(threshold, 3), strong, round(strong_threshold, 3))


def shipped_fit(fresh: Fit) -> Fit:
    """The constants in chatbot/answering/signals.py as a Fit (penalties and CV from ``fresh``)."""
    return Fit(
        Logistic(sig.BIAS, dict(sig.WEIGHTS), fresh.frustration.penalty,
                 fresh.frustration.cv_log_loss, fresh.frustration.oof),
        sig.FRUSTRATION_THRESHOLD,
        Logistic(sig.STRONG_BIAS, dict(sig.STRONG_WEIGHTS), fresh.strong.penalty,
                 fresh.strong.cv_log_loss, fresh.strong.oof),
        sig.STRONG_THRESHOLD)


def drift(a: Fit, b: Fit) -> float:
    """Largest difference between two fits' constants."""
    pairs = [(a.frustration.bias, b.frustration.bias), (a.threshold, b.threshold),
             (a.strong.bias, b.strong.bias), (a.strong_threshold, b.strong_threshold)]
    pairs += [(a.frustration.weights[n], b.frustration.weights[n]) for n in sig.FEATURES]
    pairs += [(a.strong.weights[n], b.strong.weights[n]) for n in sig.FEATURES]
    return round(max(abs(u - v) for u, v in pairs), 4)


# --- evaluation ---------------------------------------------------------------------------------


def feature_table(reader: sig.SignalReader, items: Sequence[Item]) -> tuple[
        dict[str, np.ndarray], np.ndarray, list[sig.Signals], float]:
    """Cue values, VADER compound and ``read`` output of every item, and the mean time of one
    ``read`` (the lexicon already loaded)."""
    rows, compounds = [], []
    for it in items:
        compound = reader.sentiment(it.message)
        compounds.append(compound)
        rows.append(reader.features(it.message, it.history, compound))
    started = time.perf_counter()
    read = [reader.read(it.message, it.history) for it in items]
    read_ms = (time.perf_counter() - started) * 1000 / len(items)
    return ({n: np.array([r[n] for r in rows]) for n in sig.FEATURES}, np.array(compounds),
            read, read_ms)


def evaluate(items: Sequence[Item], predicted: np.ndarray) -> dict[str, Any]:
    truth = [it.frustrated for it in items]
    out: dict[str, Any] = {**prf(truth, predicted),
                           "calm_complaints_escalated": calm_escalated(items, predicted)}
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        by_kind[it.kind].append(i)
        by_kind["multi-turn" if it.history else "single message"].append(i)
    out["by_kind"] = {
        kind: {"n": len(rows), "labelled_frustrated": int(sum(truth[i] for i in rows)),
               "predicted_frustrated": round(float(np.mean(predicted[rows])), 4),
               "accuracy": round(float(np.mean([predicted[i] == truth[i] for i in rows])), 4)}
        for kind, rows in sorted(by_kind.items())
    }
    return out


def history_routes(items: Sequence[Item]) -> dict[str, int]:
    """The bot turns in the items' histories by route (what the ``fallbacks`` cue reads)."""
    routes: dict[str, int] = defaultdict(int)
    for it in items:
        for turn in it.history:
            if turn.role != "customer":
                routes[turn.route or "none"] += 1
    return dict(sorted(routes.items(), key=lambda kv: (-kv[1], kv[0])))


def subset(x: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {n: v[rows] for n, v in x.items()}


def run(fit_only: bool) -> dict[str, Any] | None:
    load_before = load_average()
    items = load()
    reader = sig.SignalReader()
    x, compound, read, read_ms = feature_table(reader, items)
    dev_rows = np.array([it.split == "dev" for it in items])
    test_rows = ~dev_rows
    dev = [it for it in items if it.split == "dev"]
    test = [it for it in items if it.split == "test"]
    x_dev = subset(x, dev_rows)
    fresh = fit(dev, x_dev)
    if fit_only:
        print_constants(fresh)
        return None

    shipped = shipped_fit(fresh)
    frustrated = np.array([s.frustrated for s in read])  # what the module itself says
    strongly = np.array([s.strongly_frustrated for s in read])
    frustration = np.array([s.frustration for s in read])
    dev_truth = [it.frustrated for it in dev]
    vader_cut = pick_threshold(compound[dev_rows], dev, dev_truth, higher_is_positive=False)
    vader_cut_calm = pick_threshold(compound[dev_rows], dev, dev_truth, higher_is_positive=False,
                                    calm_cap=MAX_CALM_ESCALATED)
    systems: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        f"VADER alone (compound <= {vader_cut:.3f}, best dev F1)":
            lambda rows: compound[rows] <= vader_cut,
        f"VADER alone (compound <= {vader_cut_calm:.3f}, best dev F1 with <= 5% calm escalated)":
            lambda rows: compound[rows] <= vader_cut_calm,
        "VADER alone (compound <= -0.05, VADER's own convention)":
            lambda rows: compound[rows] <= -0.05,
        f"VADER + cues (frustration >= {shipped.threshold})": lambda rows: frustrated[rows],
    }
    results: dict[str, Any] = {
        "command": "bench/bench_signals.py",
        "date": f"{datetime.now(UTC):%Y-%m-%d}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        # VADER and the cues are pure Python (numpy only for the fits): one thread.
        "threads": 1,
        "data": {
            "file": str(DATA.relative_to(ROOT)),
            "sha256": hashlib.sha256(DATA.read_bytes()).hexdigest()[:16],
            "items": len(items), "dev": len(dev), "test": len(test),
            "frustrated": {"dev": sum(dev_truth), "test": sum(it.frustrated for it in test)},
            "strong": {"dev": sum(it.strong for it in dev), "test": sum(it.strong for it in test)},
            "kinds": {k: sum(it.kind == k for it in items)
                      for k in sorted({it.kind for it in items})},
            "history_bot_routes": history_routes(items),
        },
        "vadersentiment": version("vadersentiment"),
        "model": {
            "frustration": {"bias": shipped.frustration.bias,
                            "weights": shipped.frustration.weights,
                            "threshold": shipped.threshold,
                            "penalty": fresh.frustration.penalty,
                            "cv_log_loss_by_penalty": fresh.frustration.cv_log_loss},
            "strong": {"bias": shipped.strong.bias, "weights": shipped.strong.weights,
                       "threshold": shipped.strong_threshold, "penalty": fresh.strong.penalty,
                       "cv_log_loss_by_penalty": fresh.strong.cv_log_loss},
            "max_difference_from_a_fresh_fit_on_dev": drift(fresh, shipped),
        },
        "read_ms_mean": round(read_ms, 3),
        "test": {}, "dev": {},
    }
    for name, predict in systems.items():
        results["test"][name] = evaluate(test, predict(test_rows))
        results["dev"][name] = evaluate(dev, predict(dev_rows))

    strong_test = prf([it.strong for it in test], strongly[test_rows])
    strong_test["labelled_strong"] = sum(it.strong for it in test)
    strong_test["flagged"] = int(strongly[test_rows].sum())
    strong_test["flagged_not_frustrated"] = int(
        sum(f and not it.frustrated for f, it in zip(strongly[test_rows], test, strict=True)))
    results["strong_test"] = strong_test
    results["strong_dev"] = prf([it.strong for it in dev], strongly[dev_rows])

    ablation = {}
    x_test = subset(x, test_rows)
    for name in sig.FEATURES:
        kept = [n for n in sig.FEATURES if n != name]
        formula = fit_formula(x_dev, dev_truth, kept)
        cut = pick_threshold(formula.oof, dev, dev_truth, calm_cap=MAX_CALM_ESCALATED)
        predicted = formula.scores(x_test) >= cut
        ablation[name] = {"f1": prf([it.frustrated for it in test], predicted)["f1"],
                          "calm_complaints_escalated": calm_escalated(test, predicted)}
    results["ablation_test"] = ablation
    truth_test = np.array([it.frustrated for it in test])
    results["cue_rates_test"] = {
        n: {"frustrated": round(float(np.mean(x_test[n][truth_test] > 0)), 3),
            "not_frustrated": round(float(np.mean(x_test[n][~truth_test] > 0)), 3)}
        for n in sig.FEATURES
    }
    # For information only (nothing is chosen here): how the operating point trades recall for
    # calm complaints escalated, on both splits.
    results["threshold_sensitivity"] = {
        str(t): {split: {"f1": prf([it.frustrated for it in part], frustration[rows] >= t)["f1"],
                         "calm_complaints_escalated": calm_escalated(part,
                                                                     frustration[rows] >= t)}
                 for split, part, rows in (("dev", dev, dev_rows), ("test", test, test_rows))}
        for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    }
    results["load_average"] = {"start": load_before, "end": load_average()}
    results["test_errors"] = [
        {"id": it.id, "kind": it.kind, "labelled": it.frustrated,
         "frustration": round(float(f), 3), "turns": len(it.history), "message": it.message}
        for it, f, p in zip(test, frustration[test_rows], frustrated[test_rows], strict=True)
        if p != it.frustrated
    ]
    return results


def print_constants(model: Fit) -> None:
    for name, formula in (("frustration", model.frustration), ("strong", model.strong)):
        print(f"# {name}: penalty {formula.penalty}; 5-fold CV log loss by penalty: "
              f"{formula.cv_log_loss}")
    for prefix, formula in (("", model.frustration), ("STRONG_", model.strong)):
        print(f"{prefix}BIAS = {formula.bias}")
        print(f"{prefix}WEIGHTS: dict[str, float] = {{")
        for name in sig.FEATURES:
            print(f'    "{name}": {formula.weights[name]},')
        print("}")
        if prefix:
            print(f"STRONG_THRESHOLD = {model.strong_threshold}")
        else:
            print(f"FRUSTRATION_THRESHOLD = {model.threshold}")


# --- report -------------------------------------------------------------------------------------


def markdown(r: dict[str, Any]) -> str:
    d = r["data"]
    m = r["model"]["frustration"]
    st = r["model"]["strong"]
    lines = [
        "# Frustration signals: VADER alone against VADER + support cues",
        "",
        f"{r['date']}, {r['machine']}. Command: `{r['command']}`. vaderSentiment "
        f"{r['vadersentiment']}.",
        "",
        f"Data: `{d['file']}` (sha256 {d['sha256']}…), {d['items']} customer messages written "
        f"for this benchmark, labelled by the rule in `bench/data/README.md`: dev {d['dev']} "
        f"({d['frustrated']['dev']} frustrated), test {d['test']} "
        f"({d['frustrated']['test']} frustrated). Kinds: "
        + ", ".join(f"{k} {n}" for k, n in d["kinds"].items()) + "."
        + (" Bot turns in the multi-turn histories by route: "
           + ", ".join(f"{k} {n}" for k, n in d["history_bot_routes"].items())
           + " (the `fallbacks` cue counts them)." if "history_bot_routes" in d else ""),
        "",
        f"Conditions: {r.get('threads', 1)} thread (VADER and the cues are pure Python; no "
        "model, no cache: every message is read afresh); 1-minute load average "
        + (f"{r['load_average']['start']} at the start, {r['load_average']['end']} at the end."
           if "load_average" in r else "not recorded for this run.")
        + " Only the `read` time below is a timing; the rest is counts.",
        "",
        "Everything chosen is chosen on dev: the logistic weights (L2 penalty "
        f"{m['penalty']}, strong formula {st['penalty']}, each by 5-fold cross-validation), the "
        "frustration threshold (best out-of-fold F1 with at most 5% of calm complaints "
        "escalated), the strong threshold (best out-of-fold F1 on the `strong` label), and "
        "VADER's cut-off. Test numbers below are from the test split only; the VADER + cues row "
        "is `SignalReader.read` itself.",
        "",
        "Targets (test): F1 ≥ 0.85, calm complaints escalated ≤ 5%.",
        "",
        "## Test split",
        "",
        "| system | precision | recall | F1 | calm complaints escalated |",
        "|---|---|---|---|---|",
    ]
    for name, v in r["test"].items():
        lines.append(f"| {name} | {v['precision']} | {v['recall']} | {v['f1']} | "
                     f"{v['calm_complaints_escalated']:.1%} |")
    systems = list(r["test"])
    base, ours = systems[0], systems[-1]
    ours_test = r["test"][systems[-1]]
    calm_n = ours_test["by_kind"][CALM]["n"]
    met_f1 = "met" if ours_test["f1"] >= 0.85 else "NOT met"
    met_calm = "met" if ours_test["calm_complaints_escalated"] <= 0.05 else "NOT met"
    lines += [
        "",
        f"Targets on test: F1 {ours_test['f1']} ≥ 0.85: {met_f1}; calm complaints escalated "
        f"{ours_test['calm_complaints_escalated']:.1%} ≤ 5%: {met_calm} "
        f"({round(ours_test['calm_complaints_escalated'] * calm_n)} of {calm_n}).",
        "",
        "Share predicted frustrated by kind (test); `labelled` = how many are labelled "
        "frustrated:",
        "",
        "| kind | n | labelled | VADER alone (best dev F1) | VADER + cues |",
        "|---|---|---|---|---|",
    ]
    for kind, v in r["test"][ours]["by_kind"].items():
        b = r["test"][base]["by_kind"][kind]
        lines.append(f"| {kind} | {v['n']} | {v['labelled_frustrated']} | "
                     f"{b['predicted_frustrated']:.0%} | {v['predicted_frustrated']:.0%} |")
    s = r["strong_test"]
    lines += [
        "",
        f"Strongly frustrated (frustrated, and strong score ≥ {st['threshold']}) against the "
        f"`strong` label, test: precision {s['precision']}, recall {s['recall']}, F1 {s['f1']} "
        f"({s['flagged']} flagged of {s['labelled_strong']} labelled strong; "
        f"{s['flagged_not_frustrated']} flagged are not frustrated at all). Dev: F1 "
        f"{r['strong_dev']['f1']}.",
        "",
        "## Dev split (used for fitting; optimistic)",
        "",
        "| system | precision | recall | F1 | calm complaints escalated |",
        "|---|---|---|---|---|",
    ]
    for name, v in r["dev"].items():
        lines.append(f"| {name} | {v['precision']} | {v['recall']} | {v['f1']} | "
                     f"{v['calm_complaints_escalated']:.1%} |")
    lines += [
        "",
        "## The fitted formulas",
        "",
        f"frustration = sigmoid({m['bias']} + Σ weight × cue), each cue 0..1; frustrated at ≥ "
        f"{m['threshold']}. strong = sigmoid({st['bias']} + Σ strong weight × cue); strongly "
        f"frustrated when frustrated and strong ≥ {st['threshold']}. Weights other than "
        "`polite` are kept ≥ 0. Largest difference between the constants in "
        "`chatbot/answering/signals.py` and a fresh fit on dev: "
        f"{r['model']['max_difference_from_a_fresh_fit_on_dev']}.",
        "",
        "| cue | weight | strong weight | fires on test: frustrated | not frustrated | test F1 "
        "without it (refit on dev) | calm escalated without it |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, w in m["weights"].items():
        rate, ab = r["cue_rates_test"][name], r["ablation_test"][name]
        lines.append(f"| {name} | {w} | {st['weights'][name]} | {rate['frustrated']:.0%} | "
                     f"{rate['not_frustrated']:.0%} | {ab['f1']} | "
                     f"{ab['calm_complaints_escalated']:.1%} |")
    lines += [
        "",
        f"One `SignalReader.read` takes {r['read_ms_mean']} ms on average (VADER + the cues, "
        f"after the lexicon is loaded; mean over all {d['items']} messages, one thread, "
        "conditions above).",
        "",
        "Operating points of the shipped formula, for information (the threshold is chosen "
        "above, on dev out-of-fold scores, not here); dev is in-sample:",
        "",
        "| threshold | dev F1 | dev calm escalated | test F1 | test calm escalated |",
        "|---|---|---|---|---|",
        *(f"| {t} | {v['dev']['f1']} | {v['dev']['calm_complaints_escalated']:.1%} | "
          f"{v['test']['f1']} | {v['test']['calm_complaints_escalated']:.1%} |"
          for t, v in r["threshold_sensitivity"].items()),
        "",
        f"## Test errors of VADER + cues ({len(r['test_errors'])})",
        "",
        "| id | kind | labelled | frustration | turns before | message |",
        "|---|---|---|---|---|---|",
    ]
    for e in r["test_errors"]:
        text = e["message"].replace("|", "\\|")
        lines.append(f"| {e['id']} | {e['kind']} | {'frustrated' if e['labelled'] else 'not'} "
                     f"| {e['frustration']} | {e['turns']} | {text} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", action="store_true",
                        help="fit on dev and print the constants for chatbot/answering/signals.py")
    args = parser.parse_args()
    results = run(fit_only=args.fit)
    if results is not None:
        write_report("signals", results, markdown(results))


if __name__ == "__main__":
    main()
