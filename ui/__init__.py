"""The customer-facing front ends: the Gradio web UI (``ui.gradio_app``, with the admin tab in
``ui.admin``) and the embeddable widget's static files in ``ui/widget/``.

Importing this package loads nothing heavy; ``ui.gradio_app`` imports Gradio when used.
"""

from pathlib import Path

WIDGET_DIR = Path(__file__).resolve().parent / "widget"
"""Folder of widget.js, widget.css and example.html (served at /widget/ by chatbot.web.app)."""
