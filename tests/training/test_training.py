"""Fine-tuning end to end on the tiny knowledge base: supervised examples, answer-only loss,
a few LoRA and full steps on the tiny LM (loaded back by the generator), and a few contrastive
steps on the embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_lm import tiny_lm_dir  # noqa: F401  (session fixture)

from chatbot.answering import prompt
from chatbot.answering.privacy import redact
from chatbot.config import Settings
from chatbot.generation.local import TransformersGenerator
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.search import Retriever
from chatbot.training.data import Example, build_examples, encode, split_examples
from chatbot.training.generator import FinetuneConfig, finetune_generator


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(Settings(_env_file=None, torch_threads=1))


def test_examples_use_sources_from_other_records(settings: Settings, embedder: Embedder) -> None:
    documents = load_knowledge_base(settings.knowledge_base)
    retriever = Retriever.from_documents(documents, settings, embedder)
    examples, counts = build_examples(documents, retriever, settings, progress=False)
    assert counts["faq_examples"] + counts.get("faq_fallback_examples", 0) == 15  # 5 FAQs x 3
    dialogue = [e for e in examples if e.kind == "dialogue"]
    assert len(dialogue) + counts.get("dialogue_turns_unsupported", 0) == 3
    for example in dialogue:
        user = example.messages[-1]["content"]
        assert example.group not in user  # the turn's own dialogue is never a source
        assert "Customer: " + "the zipper" not in user or example.group != "dlg-0002"
    for example in (e for e in examples if e.kind == "faq"):
        # An FAQ target cites its own source, or is the honest fallback when retrieval missed.
        assert example.target == prompt.FALLBACK_TEXT or example.target.endswith("]")
        cited = prompt.cited_numbers(example.target, prompt.MAX_SOURCES)
        if cited:
            assert f"[{cited[0]}] Q:" in example.messages[-1]["content"]
    train, held = split_examples(examples, 0.3)
    assert {e.group for e in train}.isdisjoint({e.group for e in held})


# A dialogue whose first turn holds personal data and whose second turn is answerable.
PRIVATE_DIALOGUE = (
    '{"id": "dlg-0003", "channel": "chat", "topic": "shipping", "outcome": "resolved", "turns": ['
    '{"role": "customer", "text": "hi, jane.doe@example.com here, my card 4111 1111 1111 1111 '
    'was charged, call me on +1 415 555 0134"}, '
    '{"role": "agent", "text": "Thanks Jane, I can see the charge on 4111 1111 1111 1111."}, '
    '{"role": "customer", "text": "ok. how long does standard shipping take to reach me?"}, '
    '{"role": "agent", "text": "Standard shipping takes 3-5 business days."}]}\n')


def _sources(example: Example) -> str:
    """The numbered sources of an example's prompt (its last message, less the question)."""
    return example.messages[-1]["content"].rsplit("\n\nCustomer: ", 1)[0]


def test_dialogue_examples_are_redacted_and_never_quote_their_own_dialogue(
        settings: Settings, embedder: Embedder) -> None:
    with (settings.knowledge_base / "dialogues.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(PRIVATE_DIALOGUE)
    documents = load_knowledge_base(settings.knowledge_base)
    retriever = Retriever.from_documents(documents, settings, embedder)
    examples, _ = build_examples(documents, retriever, settings, progress=False)
    private = [e for e in examples if e.group == "dlg-0003"]
    assert len(private) == 2  # both turns kept: the test really sees their prompts

    everything = json.dumps([(e.messages, e.target) for e in examples])
    for detail in ("jane.doe@example.com", "4111 1111 1111 1111", "555 0134"):
        assert detail not in everything  # not in a question, a history turn, a source or a target
    follow_up = next(e for e in private if len(e.messages) > 2)
    assert "[email]" in follow_up.messages[1]["content"]  # the earlier turn, redacted
    assert "[card]" in follow_up.messages[2]["content"]  # the agent's reply in the history

    turns = {d.record_id: d for d in documents if d.kind == "dialogue"}
    for example in (e for e in examples if e.kind == "dialogue"):
        own = [redact(d.question) for key, d in turns.items()
               if key.startswith(example.group + "#")]
        # A sibling turn of the same dialogue would leak the answer into its own prompt.
        assert not [q for q in own if q[:30] in _sources(example)], example.group


def test_loss_covers_only_the_answer_tokens(tiny_lm_dir: Path) -> None:  # noqa: F811
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    example = Example([{"role": "user", "content": "how long is shipping?"}],
                      "Standard shipping takes 3-5 business days.", "g", "faq")
    ids, labels = encode(example, tokenizer, 640, 192)
    answer = tokenizer(example.target, add_special_tokens=False)["input_ids"]
    n_prompt = len(ids) - len(answer) - 1
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == answer + [tokenizer.eos_token_id] == ids[n_prompt:]
    # A long prompt is cut from the left; the answer is kept whole.
    long = Example([{"role": "user", "content": "shipping " * 900}], example.target, "g", "faq")
    ids, labels = encode(long, tokenizer, 64, 192)
    assert len(ids) <= 64 and labels[-len(answer) - 1:] == answer + [tokenizer.eos_token_id]


def test_lora_finetuning_trains_saves_and_loads(settings: Settings, tiny_lm_dir: Path,  # noqa: F811
                                                embedder: Embedder, tmp_path: Path) -> None:
    s = settings.model_copy(update={"torch_threads": 1})
    out = tmp_path / "adapter"
    config = FinetuneConfig(output=str(out), model=str(tiny_lm_dir), max_steps=12, batch_size=4,
                            lr=5e-3, warmup_steps=2, eval_fraction=0.3, max_length=256)
    metrics = finetune_generator(s, config, embedder=embedder, progress=False)
    assert metrics["steps"] == 12 and 12 <= metrics["examples_seen"] <= 48
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]  # it learned something
    assert metrics["examples_per_s"] > 0 and metrics["device"] == "cpu"
    for name in ("adapter_config.json", "adapter_model.safetensors", "finetune_config.json",
                 "metrics.json", "TRAINING.md"):
        assert (out / name).is_file(), name
    resolved = json.loads((out / "finetune_config.json").read_text())
    assert resolved["base_model"] == str(tiny_lm_dir) and resolved["lora_r"] == 8
    assert "eval_loss_after" in (out / "TRAINING.md").read_text()

    base = TransformersGenerator(s, model=str(tiny_lm_dir), adapter="none")
    tuned = TransformersGenerator(s, model=str(tiny_lm_dir), adapter=str(out))
    messages = [{"role": "user", "content": "how long is shipping?"}]
    tuned_text = tuned.generate(messages, max_new_tokens=8).text
    assert tuned.name.endswith("+adapter")
    assert tuned_text != base.generate(messages, max_new_tokens=8).text  # the adapter is merged


def test_cpu_bf16_autocast_learns_and_keeps_fp32_weights(settings: Settings,
                                                         tiny_lm_dir: Path,  # noqa: F811
                                                         embedder: Embedder,
                                                         tmp_path: Path) -> None:
    from safetensors import safe_open

    s = settings.model_copy(update={"torch_threads": 1})
    out = tmp_path / "bf16"
    config = FinetuneConfig(output=str(out), model=str(tiny_lm_dir), max_steps=12, batch_size=4,
                            lr=5e-3, warmup_steps=2, eval_fraction=0.3, max_length=256,
                            cpu_bf16=True)
    metrics = finetune_generator(s, config, embedder=embedder, progress=False)
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert metrics["dtype"] == "float32 weights, bfloat16 autocast"
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as weights:
        dtypes = {str(weights.get_tensor(k).dtype) for k in weights.keys()}  # noqa: SIM118
    assert dtypes == {"torch.float32"}  # mixed precision computes in bf16, stores fp32


def test_full_finetuning_saves_a_loadable_model(settings: Settings, tiny_lm_dir: Path,  # noqa: F811
                                                embedder: Embedder, tmp_path: Path) -> None:
    s = settings.model_copy(update={"torch_threads": 1})
    out = tmp_path / "full"
    config = FinetuneConfig(output=str(out), model=str(tiny_lm_dir), full=True, max_steps=2,
                            batch_size=2, lr=1e-4, eval_fraction=0.3, max_length=256)
    finetune_generator(s, config, embedder=embedder, progress=False)
    assert (out / "config.json").is_file() and (out / "metrics.json").is_file()
    assert TransformersGenerator(s, model=str(out), adapter="none").generate(
        "hello", max_new_tokens=3).tokens >= 1


def test_embedder_finetuning_reports_recall_before_and_after(settings: Settings,
                                                             tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from chatbot.training.embedder import finetune_embedder

    s = settings.model_copy(update={"torch_threads": 1})
    out = tmp_path / "emb"
    metrics = finetune_embedder(s, output=out, batch_size=4, max_steps=2, eval_fraction=0.3,
                                progress=False)
    assert metrics["steps"] == 2
    assert 0.0 <= metrics["recall@1_before"] <= 1.0 and 0.0 <= metrics["recall@1_after"] <= 1.0
    assert metrics["held_out_pairs"] > 0 and metrics["train_pairs"] >= 4
    vector = SentenceTransformer(str(out), device="cpu").encode(["where is my order"])
    assert vector.shape == (1, 384)


def test_labelled_pairs_join_texts_of_the_same_label() -> None:
    import random

    from chatbot.training.embedder import pairs_from_labelled

    rows = [("where is my card", "card"), ("card not here", "card"), ("lost my card", "card"),
            ("what time is it", "time"), ("tell me the time", "time"), ("alone", "solo")]
    pairs = pairs_from_labelled(rows, random.Random(0))
    label_of = dict(rows)
    assert len(pairs) == 5  # 'alone' has no partner
    for text, positive, label in pairs:
        assert text != positive and label_of[text] == label_of[positive] == label


def test_batches_never_pair_a_positive_with_its_twin_and_drop_nothing_that_fits() -> None:
    from chatbot.training.embedder import clash_free_batches

    # Three groups, many pairs each: a batch of 3 can hold one pair of each group.
    pairs = [(f"q{g}{i}", f"a{g}{i}", f"g{g}") for g in range(3) for i in range(4)]
    batches = clash_free_batches(pairs, 3)
    assert len(batches) == 4  # all 12 pairs used: clashing pairs wait, they are not dropped
    for batch in batches:
        assert len({p[2] for p in batch}) == len({p[1] for p in batch}) == 3
