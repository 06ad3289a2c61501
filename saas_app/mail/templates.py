"""The messages' words: a text and an HTML part per message, from Jinja2 templates in
`templates/` (`<name>.txt`, `<name>.html`). HTML is autoescaped: a tenant named
`<script>` is shown, never run; the text part is not HTML and is not escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

ENVIRONMENT = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,  # a missing value is an error, not an empty hole in a mail
    keep_trailing_newline=True,
)


def render(name: str, **context: Any) -> tuple[str, str]:
    """(text, html) of the message `name`."""
    text = ENVIRONMENT.get_template(f"{name}.txt").render(**context)
    html = ENVIRONMENT.get_template(f"{name}.html").render(**context)
    return text, html


def page_link(public_url: str, tenant_slug: str, page: str, token: str) -> str:
    """A mailed link to one of the tenant's pages (`reset-password`, `verify-email`,
    `accept-invite`), carrying its token (API-v2 §1)."""
    return f"{public_url}/t/{quote(tenant_slug)}/{page}?token={quote(token)}"
