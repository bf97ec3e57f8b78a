"""A tiny real causal LM for tests: a 2-layer Llama with random (seeded) weights and a BPE
tokenizer trained on a few support sentences, with a ChatML chat template like SmolLM2's.

It is a real transformers model (generate, streaming, peft, training all work), built in about a
second, so generator, pipeline and fine-tuning tests never load the shipped 135M model.
Test modules import the ``tiny_lm_dir`` session fixture from here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "Standard shipping takes 3-5 business days.",
    "We ship to all Canadian provinces in 5-8 business days.",
    "Start a return from Orders in your account within 60 days and print the free label.",
    "We accept Visa, Mastercard, American Express, PayPal and gift cards.",
    "Click Forgot password on the sign-in page and follow the emailed link.",
    "my order hasnt arrived yet, where is my package?",
    "The warranty team replies within 2 business days. Sources: [1] [2] [3]",
    "Customer: how do I cancel my order? Agent: You can cancel it from your account.",
    "You are a customer-service assistant for an online store. Answer using only the sources.",
    "I'm not sure. Would you like me to connect you with a member of our support team?",
]


def build_tiny_lm(path: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 5, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<|im_start|>",
        eos_token="<|im_end|>", pad_token="<|im_end|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id, tie_word_embeddings=False, initializer_range=0.2,
    )
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm") / "model")
