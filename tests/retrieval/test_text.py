"""Text normalisation: the claim words of the support check and the keyword index's tokens share
one English stemmer."""

from __future__ import annotations

from chatbot.retrieval.text import (
    CLAIM_STOPWORDS,
    content_words,
    is_number,
    keyword_stemmer,
    keyword_tokens,
)


def test_content_words_stem_drop_courtesy_and_keep_numbers_whole() -> None:
    words = content_words("Happy to help! Shipping takes 3-5 business days and costs $6.95.")
    assert words == ["ship", "take", "3-5", "busi", "day", "cost", "6.95"]
    assert {"happy", "help", "please"} <= CLAIM_STOPWORDS
    assert is_number("3-5") and not is_number("ship")


def test_keyword_tokens_and_content_words_use_the_same_stemmer() -> None:
    tokens = keyword_tokens(["Shipping takes business days"], keyword_stemmer())[0]
    assert set(tokens) <= set(content_words("Shipping takes business days"))
