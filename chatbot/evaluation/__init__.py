"""Evaluation (offline tooling, shared with ``bench/``): dataset readers and splits
(``datasets``), metrics (``metrics``), and retrieval, routing, answer and held-out demo
evaluations. Serving code never imports this package."""
