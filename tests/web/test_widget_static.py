"""Fast checks of the widget's files, no browser: safe DOM insertion only, nothing loaded from
another origin, one tag on the example page, and every API path the widget calls exists in
the real app. The browser tests (test_ui_browser.py) check the behaviour."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from chatbot.config import Settings

WIDGET = Path(__file__).resolve().parents[2] / "ui" / "widget"


def _code(path: Path) -> str:
    """The file without comments, so words in comments cannot make a check pass or fail."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"(?m)(^|[^:\\])//.*$", r"\1", text)


@pytest.fixture(scope="module")
def widget_js() -> str:
    return _code(WIDGET / "widget.js")


@pytest.mark.parametrize(
    "sink",
    ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "createContextualFragment",
     "DOMParser", "eval(", "new Function", "setHTMLUnsafe", ".html("],
)
def test_widget_never_parses_text_as_html(widget_js: str, sink: str) -> None:
    assert sink not in widget_js, f"widget.js uses {sink}: insert text with textContent"


def test_widget_inserts_message_text_with_text_content(widget_js: str) -> None:
    # Every text of a message (customer, bot, sources, notices) goes through textContent.
    assert "answer.text.textContent = answer.content" in widget_js
    assert "node.textContent = String(text)" in widget_js  # the el() helper all rows use


def test_widget_loads_nothing_from_another_origin(widget_js: str) -> None:
    urls = set(re.findall(r"https?://[^\s\"')]+", widget_js))
    assert urls <= {"http://www.w3.org/2000/svg"}, f"external URLs in widget.js: {urls}"
    assert 'createElement("script")' not in widget_js and "import(" not in widget_js
    css = _code(WIDGET / "widget.css")
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?https?:", css)


def test_widget_styles_live_in_a_shadow_root_loaded_next_to_the_script(widget_js: str) -> None:
    assert "attachShadow(" in widget_js
    assert 'new URL("widget.css", scriptUrl)' in widget_js
    # The stylesheet is appended to the shadow root, not to the host document's <head>.
    assert "shadow.appendChild(link)" in widget_js and "document.head" not in widget_js


def test_widget_css_isolates_inherited_styles_and_goes_full_screen_on_phones() -> None:
    css = _code(WIDGET / "widget.css")
    host = re.search(r":host\s*\{([^}]*)\}", css)
    assert host and "all: initial" in host.group(1)
    phone = re.search(r"@media \(max-width: 480px\)\s*\{(.*)\}\s*$", css, flags=re.S)
    assert phone, "no phone-width media query"
    panel = re.search(r"\.cw-panel\s*\{([^}]*)\}", phone.group(1))
    assert panel and "inset: 0" in panel.group(1) and "width: 100%" in panel.group(1)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_example_page_embeds_the_widget_with_exactly_one_tag() -> None:
    parser = _Tags()
    parser.feed((WIDGET / "example.html").read_text(encoding="utf-8"))
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert len(scripts) == 1, "the example page should need exactly one <script> tag"
    (script,) = scripts
    assert (script.get("src") or "").endswith("widget.js")
    assert script.get("data-title") == "Pinecrest help"
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", script.get("data-color") or "")
    # Nothing else on the page comes from the network (the demo must work offline).
    for tag, attrs in parser.tags:
        for name in ("src", "href"):
            assert not (attrs.get(name) or "").startswith(("http:", "https:", "//")), (tag, attrs)


def test_every_api_path_the_widget_calls_exists_in_the_app(widget_js: str,
                                                           settings: Settings) -> None:
    from standin import StandInPipeline

    from chatbot.conversations.engine import upgrade
    from chatbot.web.app import create_app

    upgrade(settings)
    app = create_app(settings, pipeline=StandInPipeline(), mount_ui=False)
    paths = app.openapi()["paths"]
    # postJson("/feedback", ...), API + "/chat/stream", API + "/conversations/" + id
    called = set(re.findall(r'postJson\("(/[a-z/]+)"', widget_js))
    called |= set(re.findall(r'API \+ "(/[a-z/]+)"', widget_js))
    assert called >= {"/chat/stream", "/feedback", "/handoff", "/conversations/"}
    for path in called:
        full = "/api/v1" + path
        if full.endswith("/"):
            full += "{conversation_id}"
        assert full in paths, f"widget.js calls {full}, which the API does not serve"
        method = "get" if path in ("/conversations/", "/suggestions/opening") else "post"
        assert method in paths[full], f"{full} does not accept {method.upper()}"
