"""The verifier's synthetic data (each perturbation kind, faithful rewrites, the split by FAQ,
the committed held-out set reproduced from the demo knowledge base) and a tiny training run
whose weights load back."""

from __future__ import annotations

import random
from pathlib import Path

from standin_stages import doc

from chatbot.answering.verify import WEIGHTS_FILE, make_verifier, read_config
from chatbot.config import Settings
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.training.verifier import finetune_verifier, pick_threshold
from chatbot.training.verifier_data import (
    NEGATIVE_KINDS,
    Vocabulary,
    change_number,
    drop_condition,
    heldout_pairs,
    negate,
    pairs_for,
    part,
    read_pairs,
    rewrite,
    split_groups,
    swap_name,
)

ROOT = Path(__file__).resolve().parents[2]
SIGNATURE = ("Orders over $500 require a signature on delivery; other orders are usually left at "
             "your door or mailbox.")
SOURCE = ("Standard shipping in the US is $6.95, and it's free on orders of $75 or more. "
          "Returns are accepted within 60 days of delivery. We ship to Canada with UPS, and 10% "
          "of our profits go to trail groups. You can't return gift cards.")
VOCABULARY = Vocabulary.from_texts([SOURCE, SIGNATURE, "Express takes 1-2 business days, "
                                    "$14.95, in France with DHL, within 30 days, 15% off."])


def _draws(function, *args, n: int = 30) -> set[str]:  # type: ignore[no-untyped-def]
    """What ``function`` makes of the same input under ``n`` seeds (None dropped)."""
    out = {function(*args, random.Random(seed)) for seed in range(n)}
    return {o for o in out if o is not None}


def test_negation_is_added_or_removed() -> None:
    assert "You can return gift cards." in _draws(negate, "You can't return gift cards.")
    added = _draws(negate, "Returns are accepted within 60 days of delivery.")
    assert "Returns are not accepted within 60 days of delivery." in added
    assert negate("Happy trails to everyone.", random.Random(0)) is None


def test_numbers_prices_and_durations_change_to_another_value_of_their_kind() -> None:
    sentence = "Standard shipping in the US is $6.95, and it's free on orders of $75 or more."
    prices = _draws(change_number, sentence, "price", VOCABULARY, SOURCE)
    assert prices and all("$" in p and p != sentence for p in prices)
    assert any("$14.95" in p or "$500" in p for p in prices)  # values the sources use
    durations = _draws(change_number, "Returns are accepted within 60 days of delivery.",
                       "duration", VOCABULARY, SOURCE)
    assert any("30 days" in d for d in durations) and any("60 weeks" in d for d in durations)
    numbers = _draws(change_number, "Good news: 10% of our profits go to trail groups.",
                     "number", VOCABULARY, SOURCE)
    assert numbers and all("10%" not in n and "%" in n for n in numbers)
    assert change_number("No numbers here at all.", "price", VOCABULARY, SOURCE,
                         random.Random(0)) is None


def test_places_and_entities_are_swapped_for_ones_the_knowledge_base_names() -> None:
    places = _draws(swap_name, "We ship to Canada with UPS.", VOCABULARY.places)
    assert places == {"We ship to France with UPS.", "We ship to the US with UPS."}
    entities = _draws(swap_name, "We ship to Canada with UPS.", VOCABULARY.entities)
    assert "We ship to Canada with DHL." in entities


def test_a_condition_is_dropped_including_the_signature_threshold() -> None:
    dropped = _draws(drop_condition, SIGNATURE)
    assert ("Orders require a signature on delivery; other orders are usually left at your "
            "door or mailbox.") in dropped
    assert "Standard shipping in the US is $6.95, and it's free." in _draws(
        drop_condition, "Standard shipping in the US is $6.95, and it's free on orders of $75 "
        "or more.")
    assert "You can cancel the order in My Account." in _draws(
        drop_condition, "If it hasn't shipped yet, you can cancel the order in My Account.")


def test_faithful_rewrites_keep_the_condition_and_parts_are_whole_clauses() -> None:
    moved = _draws(rewrite, "If it hasn't shipped yet, you can cancel the order in My Account.")
    assert "You can cancel the order in My Account if it hasn't shipped yet." in moved
    assert all("shipped" in m for m in moved)  # the condition is never lost
    assert _draws(part, SIGNATURE) == {"Orders over $500 require a signature on delivery.",
                                       "Other orders are usually left at your door or mailbox."}


def test_pairs_make_every_kind_and_a_neighbours_claim_is_a_negative() -> None:
    source = doc("ship-001", "How much is shipping?", SOURCE)
    neighbour = doc("ship-012", "Do I need to sign?", SIGNATURE)
    kinds: dict[str, set[int]] = {}
    for seed in range(20):
        for pair in pairs_for(source, "ship-001", VOCABULARY, neighbour, random.Random(seed)):
            kinds.setdefault(pair.kind, set()).add(pair.label)
            if pair.kind == "neighbour":
                assert pair.sentence.rstrip(".") in SIGNATURE and pair.source == SOURCE
    assert {k for k, labels in kinds.items() if labels == {0}} == set(NEGATIVE_KINDS)
    assert {k for k, labels in kinds.items() if labels == {1}} == {"same", "rewrite", "part"}


def test_the_split_keeps_each_faq_and_its_closest_dialogues_on_one_side() -> None:
    documents = load_knowledge_base(ROOT / "knowledge_base")
    train, held = split_groups(documents, 0.3)
    held_ids = {d.record_id for d in held}
    assert held and all(d.kind == "faq" for d in held)
    assert held_ids.isdisjoint(d.record_id for d in train)
    assert len([d for d in train if d.kind == "faq"]) + len(held) == len(
        [d for d in documents if d.kind == "faq"])
    # A dialogue restating a held-out FAQ stays out of training.
    assert len([d for d in train if d.kind != "faq"]) < len(
        [d for d in documents if d.kind != "faq"])


def test_the_committed_heldout_set_is_reproduced_from_the_demo_knowledge_base() -> None:
    committed = read_pairs(ROOT / "bench" / "data" / "verifier_heldout.jsonl")
    assert heldout_pairs(load_knowledge_base(ROOT / "knowledge_base")) == committed
    assert {p.kind for p in committed if not p.label} == set(NEGATIVE_KINDS)


def test_pick_threshold_separates_faithful_from_perturbed() -> None:
    threshold, balanced = pick_threshold([0.9, 0.8, 0.7, 0.2, 0.1, 0.35], [1, 1, 1, 0, 0, 0])
    assert 0.35 < threshold <= 0.7 and balanced == 1.0


def test_a_tiny_training_run_saves_weights_that_load_and_score(settings: Settings,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "verifier"
    tiny = settings.model_copy(update={"torch_threads": 1})
    metrics = finetune_verifier(tiny, output=out, epochs=1, batch_size=4, max_steps=2,
                                heldout_fraction=0.2, val_fraction=0.5, evaluate=False,
                                progress=False)
    assert metrics["steps"] == 2 and 0.0 <= metrics["threshold"] <= 1.0
    assert read_config(out)["meta"]["threshold"] == metrics["threshold"]
    assert (out / WEIGHTS_FILE).stat().st_size < 3_000_000  # the head only: about 2.2 MB
    verifier = make_verifier(tiny.model_copy(update={"verifier": str(out)}))
    assert verifier is not None and verifier.threshold == metrics["threshold"]
    probability = verifier.entailment("Standard shipping takes 3-5 business days.",
                                      ["Standard shipping takes 3-5 business days."])
    assert 0.0 <= probability <= 1.0 and verifier.calls == 1
