"""Which `Accept` headers get the status page at `/` (the rest keep the JSON)."""

from __future__ import annotations

import pytest

from pixelpool.api.status_page import wants_html

CHROME = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(
    "accept", [CHROME, FIREFOX, "text/html", "application/json;q=0.5, text/html"]
)
def test_browsers_get_the_page(accept: str) -> None:
    assert wants_html(accept)


@pytest.mark.parametrize(
    "accept",
    [None, "", "*/*", "application/json", "application/json, text/html",
     "text/html;q=0.5, */*", "text/html;q=0, */*;q=0.1", "application/*, text/html;q=0.9",
     "text/html;q=oops, */*;q=0.1", "text/plain"],
)  # fmt: skip
def test_api_clients_keep_the_json(accept: str | None) -> None:
    assert not wants_html(accept)
