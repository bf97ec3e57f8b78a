"""Signing in to the tabs behind a token: Admin and Improve (the admin token), Inbox (an agent's).

``TokenPanel`` is the form; ``sign_in`` checks a token on the server. What a tab learns from it
(signed in, or the agent's id) lives in a ``gr.State``: server-side, per browser session, never
sent to the page. Every handler of the tab checks that state again (``require``), because
Gradio handlers can be called without the page: hiding the panel alone would protect nothing.
Wrong tokens count against the failed sign-in limit shared with the API (``ui.ratelimit``): past
it, no token is checked at all until the limiter's minute has passed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from chatbot.errors import ChatbotError
from ui.ratelimit import Limiter, sign_in_failed, sign_in_refused
from ui.text import bot_markdown

log = logging.getLogger(__name__)

WRONG_TOKEN = "That token is not right."
ADMIN_FIRST = "Sign in with the admin token first."
SOMETHING_WRONG = "Something went wrong; the details are in the server log."


class NotSignedIn(Exception):
    """A handler ran without a sign-in in its session's state."""


def require(signed_in: object, sentence: str = ADMIN_FIRST) -> None:
    if not signed_in:
        raise NotSignedIn(sentence)


def explain(error: BaseException, what: str, tab: str) -> str:
    """The sentence a signed-in person reads for an error (HTML escaped, so it is safe as
    markdown and as HTML); stack traces go to the log only."""
    if isinstance(error, NotSignedIn):
        return str(error)
    if isinstance(error, ChatbotError):
        return f"{what} failed: {bot_markdown(str(error))}"
    log.exception("%s: %s failed", tab, what)
    return f"{what} failed. {SOMETHING_WRONG}"


@dataclass(frozen=True)
class TokenPanel:
    """The sign-in form: ``box`` is shown until the token is right (ids ``{name}-token`` and
    ``{name}-sign-in``, for the tests and for people who script the page)."""

    box: gr.Column
    token: gr.Textbox
    button: gr.Button
    message: gr.Markdown

    @classmethod
    def build(cls, name: str, intro: str, label: str, button: str) -> TokenPanel:
        with gr.Column(visible=True) as box:
            gr.Markdown(intro)
            token = gr.Textbox(label=label, type="password", max_lines=1,
                               elem_id=f"{name}-token")
            submit = gr.Button(button, variant="primary", elem_id=f"{name}-sign-in")
            message = gr.Markdown()
        return cls(box, token, submit, message)

    @property
    def triggers(self) -> tuple[Any, Any]:
        """The events that sign in: the button, or Enter in the token box."""
        return self.button.click, self.token.submit

    def outputs(self, state: gr.State, content: gr.Column) -> list[Any]:
        """What ``sign_in``'s result is written to, in its order."""
        return [state, self.box, content, self.message, self.token]


def sign_in(check: Callable[[str], Any], token: str, request: Any, limiter: Limiter | None,
            tab: str) -> tuple[Any, Any, Any, str, str]:
    """Check ``token`` on the server: ``check`` returns something true for a right token (what
    the tab keeps in its state) and something false for a wrong one. Returns, in the order of
    ``TokenPanel.outputs``: that value or None, the panel's and the tab's visibility, the
    message, and an empty token box (a token never stays on the page)."""
    refused = sign_in_refused(limiter, request)
    if refused is not None:  # the failures are used up: no token is even checked
        return None, gr.update(), gr.update(), f"**{refused}**", ""
    try:
        found = check(token)
    except ChatbotError as error:  # e.g. production without an admin token configured
        return None, gr.update(), gr.update(), f"**Cannot sign in:** {bot_markdown(str(error))}", ""
    if not found:
        log.warning("%s sign-in with a wrong token", tab)
        sign_in_failed(limiter, request)
        return None, gr.update(), gr.update(), f"**{WRONG_TOKEN}**", ""
    return found, gr.update(visible=False), gr.update(visible=True), "", ""
