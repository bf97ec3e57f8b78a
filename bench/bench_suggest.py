"""Suggested-questions benchmark: is the question a customer actually asked next among the
suggestions? Writes bench/results/suggest.json and suggest.md.

    .venv/bin/python bench/bench_suggest.py

Each customer turn of the demo dialogues is mapped to an FAQ id once, by retrieval over the FAQs
(``chatbot.answering.suggest.map_dialogues``); order numbers and chit-chat stay unmapped. The
dialogues are split by id; the suggester learns only from the train dialogues' sequences
(passed in as logged sequences). A test case is a pair of consecutive customer turns (a, b) of
a test dialogue, both mapped, b != a: after the answer to a (the dialogue's earlier FAQs
excluded, for every method), is b in the top 1 / top 3? Baselines: popularity (most asked in
train) and nearest neighbour (by question embedding); an ablation ranks by the suggester's
back-off alone. Reported: seed 13's 70/30 split, hit@3 on nine more seeds, and a 10-fold
cross-validation by dialogue (every case tested once).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from common import ROOT, load_average, write_report  # first: offline env

from chatbot.answering.suggest import MAP_THRESHOLD, Suggester, map_dialogues
from chatbot.config import Settings
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.search import Retriever
from chatbot.types import Document

SEED = 13
SEEDS = range(13, 23)
TEST_SHARE = 0.3
FOLDS = 10
K = 3
THREADS = 2
# dlg-0001..dlg-0234 predate the suggester; dlg-0235.. were written when it was built (by the
# same author), so results are also reported on the older dialogues alone.
ORIGINAL_DIALOGUES = 234

Method = Callable[[str, Sequence[str]], list[str]]
BACK_OFF = "ablation: suggester's back-off alone"


@dataclass(frozen=True)
class Case:
    dialogue: str
    answered: str
    actual: str
    history: tuple[str, ...]

    @property
    def original(self) -> bool:
        return int(self.dialogue.removeprefix("dlg-")) <= ORIGINAL_DIALOGUES


def split(ids: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Dialogue ids shuffled with ``seed``: (train 70%, test 30%)."""
    shuffled = sorted(ids)
    random.Random(seed).shuffle(shuffled)
    cut = round(len(shuffled) * (1 - TEST_SHARE))
    return sorted(shuffled[:cut]), sorted(shuffled[cut:])


def sequences(mapped: dict[str, list[str | None]], ids: Sequence[str]) -> list[list[str]]:
    """What a logged conversation would hold: the mapped FAQ ids of each dialogue, in order."""
    return [[f for f in mapped[d] if f is not None] for d in ids]


def cases(mapped: dict[str, list[str | None]], ids: Sequence[str]) -> tuple[list[Case], Counter]:
    counts: Counter[str] = Counter()
    found = []
    for d in ids:
        turns = mapped[d]
        for i in range(len(turns) - 1):
            a, b = turns[i], turns[i + 1]
            counts["consecutive customer pairs"] += 1
            if a is None or b is None:
                continue
            counts["both mapped"] += 1
            if a == b:
                counts["same FAQ again (excluded)"] += 1
                continue
            found.append(Case(d, a, b, tuple(f for f in turns[:i] if f is not None)))
    counts["test cases"] = len(found)
    return found, counts


def question_neighbours(embedder: Embedder, faqs: list[Document]) -> dict[str, list[str]]:
    """The nearest-neighbour baseline's ranking: FAQs by cosine of their questions, best first."""
    vectors = embedder.encode([d.question for d in faqs])
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return {d.record_id: [faqs[j].record_id for j in np.argsort(-sims[i], kind="stable")[:20]]
            for i, d in enumerate(faqs)}


def methods(suggester: Suggester, train: list[list[str]], near: dict[str, list[str]]
            ) -> dict[str, Method]:
    """Each method's top ``K`` after answering ``a``; none offers ``a`` or the history."""
    asked = Counter(f for seq in train for f in seq)
    popular = sorted(asked, key=lambda f: (-asked[f], f))

    def learned(a: str, history: Sequence[str]) -> list[str]:
        return [s.faq_id for s in suggester.suggest(a, history_faq_ids=history, k=K)]

    def popularity(a: str, history: Sequence[str]) -> list[str]:
        return [f for f in popular if f != a and f not in history][:K]

    def nearest(a: str, history: Sequence[str]) -> list[str]:
        return [f for f in near[a] if f not in history][:K]

    def back_off(a: str, history: Sequence[str]) -> list[str]:
        found = suggester.neighbours(a, k=K + len(history))
        return [s.faq_id for s in found if s.faq_id not in history][:K]

    return {"suggester": learned, "popularity": popularity, "nearest neighbour": nearest,
            BACK_OFF: back_off}


def rank(ways: dict[str, Method], test: Sequence[Case]) -> dict[str, list[list[str]]]:
    return {name: [way(c.answered, c.history) for c in test] for name, way in ways.items()}


def score(test: Sequence[Case], ranked: dict[str, list[list[str]]],
          keep: Callable[[Case], bool] = lambda c: True) -> dict[str, Any]:
    out = {}
    for name, lists in ranked.items():
        pairs = [(c, found) for c, found in zip(test, lists, strict=True) if keep(c)]
        n = len(pairs)
        out[name] = {"n": n, **{f"hit@{k}": round(sum(c.actual in f[:k] for c, f in pairs) / n, 4)
                                if n else None for k in (1, 3)}}
    return out


def paired(test: Sequence[Case], ranked: dict[str, list[list[str]]]) -> dict[str, Any]:
    """Against each other method: the cases only one of the two has in its top 3, and the
    two-sided sign test on them."""
    out = {}
    ours = ranked["suggester"]
    for name, theirs in ranked.items():
        if name == "suggester":
            continue
        only_ours = sum(c.actual in a and c.actual not in b
                        for c, a, b in zip(test, ours, theirs, strict=True))
        only_theirs = sum(c.actual in b and c.actual not in a
                          for c, a, b in zip(test, ours, theirs, strict=True))
        n = only_ours + only_theirs
        tail = sum(math.comb(n, i) for i in range(min(only_ours, only_theirs) + 1)) / 2**n
        out[name] = {"only suggester": only_ours, "only baseline": only_theirs,
                     "sign_test_p": round(min(1.0, 2 * tail), 6)}
    return out


def report(test: Sequence[Case], ranked: dict[str, list[list[str]]]) -> dict[str, Any]:
    return {"all": score(test, ranked),
            "original_dialogues_only": score(test, ranked, lambda c: c.original),
            "added_dialogues_only": score(test, ranked, lambda c: not c.original),
            "paired": paired(test, ranked)}


class MemoEmbedder(Embedder):
    """Encodes each list of texts once: every split's suggester embeds the same FAQs."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._memo: dict[tuple[str, ...], np.ndarray] = {}

    def encode(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        key = tuple(texts)
        if key not in self._memo:
            self._memo[key] = super().encode(texts, **kwargs)
        return self._memo[key]


@dataclass(frozen=True)
class Bench:
    """What every evaluation shares: the FAQs, the mapped dialogues, the baseline's neighbours."""

    settings: Settings
    embedder: Embedder
    faqs: list[Document]
    mapped: dict[str, list[str | None]]
    near: dict[str, list[str]]

    def run(self, train_ids: Sequence[str], test_ids: Sequence[str]
            ) -> tuple[Suggester, list[Case], dict[str, list[list[str]]], Counter]:
        """A suggester learnt from ``train_ids`` only; every method's ranking of each case."""
        train = sequences(self.mapped, train_ids)
        suggester = Suggester(self.settings, embedder=self.embedder, documents=self.faqs,
                              logged_sequences=train)
        test, counts = cases(self.mapped, test_ids)
        return suggester, test, rank(methods(suggester, train, self.near), test), counts

    def cross_validate(self, ids: Sequence[str], n_folds: int
                       ) -> tuple[list[Case], dict[str, list[list[str]]], Counter]:
        """Folds by dialogue over ``ids``: each fold ranked by a suggester learnt on the rest."""
        test_all: list[Case] = []
        ranked: dict[str, list[list[str]]] = {}
        counts: Counter[str] = Counter()
        shuffled = sorted(ids)
        random.Random(SEED).shuffle(shuffled)
        folds = [sorted(shuffled[i::n_folds]) for i in range(n_folds)]
        for i, held in enumerate(folds):
            rest = [d for j, fold in enumerate(folds) if j != i for d in fold]
            _, test, fold_ranked, fold_counts = self.run(rest, held)
            for name, found in fold_ranked.items():
                ranked.setdefault(name, []).extend(found)
            test_all += test
            counts.update(fold_counts)
        return test_all, ranked, counts

    def split(self, seed: int) -> dict[str, Any]:
        train_ids, test_ids = split(list(self.mapped), seed)
        suggester, test, ranked, counts = self.run(train_ids, test_ids)
        learnt = {a for seq in sequences(self.mapped, train_ids)
                  for a, b in zip(seq, seq[1:], strict=False) if a != b}
        result = {"seed": seed, "train_dialogues": len(train_ids),
                  "test_dialogues": len(test_ids), "counts": dict(counts),
                  "answered_faq_had_a_next_question_in_train": sum(
                      c.answered in learnt for c in test),
                  **report(test, ranked)}
        if seed == SEED:
            questions = {d.record_id: d.question for d in self.faqs}
            result["examples"] = [
                {"answered": questions[c.answered], "actual_next": questions[c.actual],
                 "suggested": [questions[f] for f in found]}
                for c, found in list(zip(test, ranked["suggester"], strict=True))[
                    :: max(1, len(test) // 6)][:6]]
            started = time.perf_counter()
            for c in test:
                suggester.suggest(c.answered, history_faq_ids=c.history)
            result["suggest_ms_per_call"] = round(
                (time.perf_counter() - started) * 1000 / max(1, len(test)), 3)
        return result


def table(rows: dict[str, dict[str, Any]], label: str) -> list[str]:
    return [f"| {label} | {name} | {r['n']} | {r['hit@1']} | {r['hit@3']} |"
            for name, r in rows.items()]


def p_value(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def paired_line(block: dict[str, Any]) -> str:
    return "; ".join(f"vs {name}: {p['only suggester']} only the suggester, {p['only baseline']} "
                     f"only the baseline (sign test {p_value(p['sign_test_p'])})"
                     for name, p in block.items())


def summary(results: dict[str, Any]) -> str:
    """The verdict in one paragraph, from the numbers below it."""
    cv, main = results["cross_validation"], results["main_split"]
    hit = {name: r["hit@3"] for name, r in cv["all"].items()}
    near, ablation = cv["paired"]["nearest neighbour"], cv["paired"][BACK_OFF]
    seed = {name: r["hit@3"] for name, r in main["all"].items()}
    verdict = ("above both baselines" if hit["suggester"] > max(hit["popularity"],
                                                                 hit["nearest neighbour"])
               else "not above both baselines")

    def margin(p: dict[str, Any]) -> str:
        significant = "significant" if p["sign_test_p"] < 0.05 else "not significant"
        return (f"{p['only suggester'] - p['only baseline']} cases net, sign test "
                f"{p_value(p['sign_test_p'])}, {significant} at 5%")

    return (
        f"**Result.** Cross-validated hit@3 of the suggester {hit['suggester']} against "
        f"popularity {hit['popularity']} and nearest neighbour {hit['nearest neighbour']} "
        f"(n = {cv['all']['suggester']['n']}): {verdict}. Margin over popularity "
        f"{margin(cv['paired']['popularity'])}; over nearest neighbour {margin(near)}. "
        f"On the seed-{SEED} split "
        f"alone: {seed['suggester']} against {seed['popularity']} and "
        f"{seed['nearest neighbour']}. Most of the margin over nearest neighbour comes from the "
        f"back-off's similarity (a's answer as well as its question: {hit[BACK_OFF]}); the "
        f"learned transitions add {ablation['only suggester'] - ablation['only baseline']} "
        f"cases net, because only {results['data']['repeated_pairs']} (a, b) pairs repeat "
        "across the demo dialogues: their statistics need logged conversations to matter.")


def markdown(results: dict[str, Any]) -> str:
    main, cv, data = results["main_split"], results["cross_validation"], results["data"]
    header = ["| test cases | method | n | hit@1 | hit@3 |", "|---|---|---|---|---|"]
    load = results.get("load_average")
    lines = [
        "# Suggested questions benchmark",
        "",
        f"Machine: {results['machine']}. Command: `{results['command']}`.",
        "",
        "Conditions: the mapping time embeds every FAQ phrasing and every customer turn once "
        f"(the turns in batches into a query cache of {results.get('query_cache', 4096)} "
        "entries that starts empty, then searched; FAQ vectors are memoised across the splits); "
        "`suggest()` is timed on a built suggester (statistics and neighbour table in memory, "
        "no model call), mean over the seed-13 test cases. No answering pipeline runs, so "
        "there is no route mix. 1-minute load average "
        + (f"{load['start']} at the start, {load['end']} at the end."
           if load else "not recorded for this run."),
        "",
        f"Data: {data['dialogues']} demo dialogues ({data['original_dialogues']} older ones and "
        f"{data['dialogues'] - data['original_dialogues']} multi-turn ones added with this "
        f"feature, by the suggester's author), {data['customer_turns']} customer turns, "
        f"{data['mapped_turns']} mapped to one of {data['faqs']} FAQs by retrieval (cosine >= "
        f"{data['map_threshold']}; {data['mapping_s']} s). A test case is a pair of consecutive "
        "customer turns (a, b) of a held-out dialogue, both mapped and b != a: after the answer "
        "to a (earlier FAQs of the dialogue excluded), is b suggested? Over all dialogues: "
        + ", ".join(f"{k} {v}" for k, v in cv["counts"].items())
        + f"; only {data['repeated_pairs']} (a, b) pairs occur in more than one dialogue.",
        "",
        "Suggester: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                  for k, v in results["suggester"].items())
        + ". Baselines: popularity (most asked in the train dialogues) and nearest neighbour "
        "(nearest to a by question embedding). The ablation ranks by the suggester's back-off "
        "alone (its neighbours: similarity to a's question and answer), without statistics.",
        "",
        summary(results),
        "",
        f"## {FOLDS}-fold cross-validation by dialogue (every case tested once)",
        "",
        *header,
        *table(cv["all"], "all"),
        *table(cv["original_dialogues_only"], "older dialogues only"),
        "",
        "Paired, top 3: " + paired_line(cv["paired"]) + ".",
        "",
        f"## 70/30 split by dialogue, seed {SEED}",
        "",
        f"{main['train_dialogues']} train, {main['test_dialogues']} test dialogues; "
        + ", ".join(f"{k} {v}" for k, v in main["counts"].items()) + ". "
        f"{main['answered_faq_had_a_next_question_in_train']} test cases answered an FAQ that "
        "had a next question in the train dialogues; the rest rely on the back-off.",
        "",
        *header,
        *table(main["all"], "all"),
        *table(main["original_dialogues_only"], "older dialogues only"),
        *table(main["added_dialogues_only"], "added dialogues only"),
        "",
        "Paired, top 3: " + paired_line(main["paired"]) + ".",
        "",
    ]
    by_seed = results["hit@3_by_seed"]
    above = {name: sum(r["suggester"] > r[name] for r in by_seed.values())
             for name in next(iter(by_seed.values())) if name != "suggester"}
    lines += [
        f"Over {len(by_seed)} such splits (seeds {min(by_seed)}–{max(by_seed)}; hit@3 of each "
        "in suggest.json), the suggester's hit@3 is higher than "
        + ", ".join(f"{name} on {n}" for name, n in above.items()) + " (ties not counted).",
        "",
        f"One `suggest()` call: {main['suggest_ms_per_call']} ms.",
        "",
    ]
    lines += [f"## Examples (seed {SEED} test cases)", ""]
    lines += [f"- after *{e['answered']}* the customer asked *{e['actual_next']}*; suggested: "
              f"{' / '.join(e['suggested'])}" for e in main["examples"]]
    lines += [
        "",
        "Limits: few cases (a few dozen per 70/30 split, so single-split numbers move by several "
        "points between seeds; the cross-validation uses every case once). The ground truth is "
        "the retrieval mapping, not a human label: on the added dialogues, whose turns the "
        "author labelled with the intended FAQ (a check made once, by hand), 86% of the kept "
        "turns map to it. The added "
        "dialogues were written by the suggester's author around common customer journeys, "
        "which can favour learned transitions; the older-dialogue rows are the unbiased, "
        "smaller sample. The neighbour similarity (question and answer) was chosen after "
        "comparing it with question-only neighbours on these same dialogues.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    load_before = load_average()
    import torch

    torch.set_num_threads(THREADS)
    settings = Settings(torch_threads=THREADS, _env_file=None)  # type: ignore[call-arg]
    embedder = MemoEmbedder(settings)
    documents = load_knowledge_base(ROOT / "knowledge_base")
    faqs = [d for d in documents if d.kind == "faq"]
    started = time.perf_counter()
    mapped = map_dialogues(documents, Retriever.from_documents(faqs, settings, embedder),
                           threshold=MAP_THRESHOLD)
    mapping_s = round(time.perf_counter() - started, 1)
    bench = Bench(settings, embedder, faqs, mapped, question_neighbours(embedder, faqs))
    runs = [bench.split(seed) for seed in SEEDS]
    test, ranked, counts = bench.cross_validate(list(mapped), FOLDS)
    pairs = Counter((c.answered, c.actual) for c in test)
    defaults = Suggester(settings)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {THREADS} torch threads",
        "command": "bench/bench_suggest.py",
        "query_cache": settings.query_cache_size,
        "load_average": {"start": load_before, "end": load_average()},
        "data": {
            "dialogues": len(mapped),
            "original_dialogues": sum(int(d.removeprefix("dlg-")) <= ORIGINAL_DIALOGUES
                                      for d in mapped),
            "customer_turns": sum(len(v) for v in mapped.values()),
            "mapped_turns": sum(f is not None for v in mapped.values() for f in v),
            "map_threshold": MAP_THRESHOLD,
            "mapping_s": mapping_s,
            "faqs": len(faqs),
            "repeated_pairs": sum(n > 1 for n in pairs.values()),
        },
        "suggester": {"smoothing": defaults.smoothing,
                      "popularity_weight": defaults.popularity_weight,
                      "neighbours": defaults.n_neighbours, "temperature": defaults.temperature},
        "cross_validation": {"folds": FOLDS, "counts": dict(counts), **report(test, ranked)},
        "main_split": next(r for r in runs if r["seed"] == SEED),
        "hit@3_by_seed": {r["seed"]: {n: v["hit@3"] for n, v in r["all"].items()}
                          for r in runs},
    }
    write_report("suggest", results, markdown(results))


if __name__ == "__main__":
    main()
