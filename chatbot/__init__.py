"""Self-hosted customer-service chatbot: hybrid retrieval over FAQs and past dialogues,
grounded generation, calibrated fallback and hand-over, SQL logging."""

__version__ = "0.1.0"
