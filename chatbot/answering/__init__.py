"""Answering: everything between retrieval hits and a ``Reply``: the customer-message check
(``inputs``), the bot's own words and the grounded prompt (``prompt``), routing (``policy``),
thresholds from data (``calibrate``), the support gate (``grounding``), frustration signals
(``signals``), and the pipeline, the only place that knows the order of the stages."""
