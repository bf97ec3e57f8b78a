"""Training (offline tooling): LoRA / full fine-tuning of the generator (``generator``, its data
in ``data``) and contrastive fine-tuning of the embedder (``embedder``). Serving code never
imports this package."""
