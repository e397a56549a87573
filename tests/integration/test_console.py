"""The audit console (``/audit/console``) in a real headless Chromium against a real region.

Scenario: one client buys tokens, gets memes (one generator failure, so one refund) and
buys again. We expect: the page, its script and stylesheet are served without a token;
opened with ``#token=...&client=...`` the page shows one table row per ledger entry,
the running balance it recomputes ends at the balance ``/v1/me`` reports, every chain
link is ok, and the screenshot shows the balance line (#d62728) and the green "ok"
markers (#2ca02c). A wrong token and an unknown client give clear error states.

Needs Debian's chromium (``scripts/install-chromium.sh``); skipped without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from PIL import Image, ImageChops

from tests.stack import FAULT_QUERY, Stack

pytestmark = [pytest.mark.kafka, pytest.mark.shared_region]

CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1200, 900
CHROMIUM_TIMEOUT_S = 45
LINE_RGB = (0xD6, 0x27, 0x28)  # .balance-line in console.css
OK_RGB = (0x2C, 0xA0, 0x2C)  # .chain-ok in console.css
TOLERANCE = 12  # per channel: the PNG is exact, but leave room for colour rounding


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed: run scripts/install-chromium.sh")
    return CHROMIUM


def run_chromium(chromium: str, tmp_path: Path, url: str, *, screenshot: Path | None = None) -> str:
    """Open ``url`` headless; returns the DOM (``--dump-dom``) or writes ``screenshot``."""
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    args = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--virtual-time-budget=5000",
    ]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    try:
        done = subprocess.run(
            [*args, url], capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def console_url(stack: Stack, client: str, token: str) -> str:
    return f"{stack.base_url}/audit/console#token={quote(token, safe='')}&client={quote(client)}"


class ConsoleDom(HTMLParser):
    """The parts of the rendered page the tests read: body state, status, ledger rows."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.state = ""
        self.rows: list[dict[str, str]] = []
        self.status = ""
        self.download_disabled = ""
        self._in_status = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.state = a.get("data-state", "")
        elif tag == "tr" and "entry" in a.get("class", "").split():
            self.rows.append(a)
        elif tag == "a" and a.get("id") == "download":
            self.download_disabled = a.get("aria-disabled", "")
        self._in_status = a.get("id") == "status"

    def handle_endtag(self, tag: str) -> None:
        self._in_status = False

    def handle_data(self, data: str) -> None:
        if self._in_status:
            self.status += data


@pytest.fixture(scope="module")
def client(stack: Stack) -> dict[str, Any]:
    """A client with purchases, deliveries and a refund; its ledger and balance."""
    client_id, api_key = stack.new_client(tokens=6)
    for n in range(3):
        assert stack.meme(api_key, query=f"console {n}").status_code == 200
    assert stack.meme(api_key, query=FAULT_QUERY).status_code == 502  # charged, refunded
    stack.purchase(client_id, 4)
    balance = stack.balance(api_key)
    deadline = time.monotonic() + 20
    while True:  # the auditor route reads the committed log: wait until it has caught up
        response = stack.http.get(
            f"/v1/clients/{client_id}/ledger", params={"limit": 1000}, headers=stack.auditor
        )
        assert response.status_code == 200, response.text
        entries = response.json()["entries"]
        if (entries and entries[-1]["balance_after"] == balance) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    return {"id": client_id, "balance": balance, "entries": entries}


def test_the_page_and_its_files_are_served_without_a_token(stack: Stack) -> None:
    page = stack.http.get("/audit/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="console/console.js"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for name, media_type in (("console.js", "text/javascript"), ("console.css", "text/css")):
        asset = stack.http.get(f"/audit/console/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].startswith(media_type)
    assert stack.http.get("/audit/console/console.py").status_code == 404
    assert stack.http.get("/audit/console/index.html").status_code == 404


def test_the_table_has_every_entry_and_the_running_balance_ends_at_the_balance(
    stack: Stack, client: dict[str, Any], chromium: str, tmp_path: Path
) -> None:
    dom = ConsoleDom(
        run_chromium(chromium, tmp_path, console_url(stack, client["id"], stack.auditor_token))
    )
    assert dom.state == "ok", dom.status
    entries = client["entries"]
    assert [int(r["data-seq"]) for r in dom.rows] == [e["seq"] for e in entries]
    assert int(dom.rows[-1]["data-running"]) == client["balance"]
    assert [int(r["data-running"]) for r in dom.rows] == [e["balance_after"] for e in entries]
    assert {r["data-chain"] for r in dom.rows} == {"ok"}
    assert dom.download_disabled == "false"
    # Types seen: the scenario really has credits, charges, deliveries and a refund.
    assert {"TokensCredited", "TokensCharged", "MemeDelivered", "TokensRefunded"} <= {
        e["type"] for e in entries
    }


def count_near(image: Image.Image, rgb: tuple[int, int, int]) -> int:
    """Pixels within TOLERANCE of ``rgb`` on every channel."""
    bands = image.convert("RGB").split()
    masks = [
        band.point(lambda v, c=c: 255 if abs(v - c) <= TOLERANCE else 0)
        for band, c in zip(bands, rgb, strict=True)
    ]
    both = ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2])
    return both.histogram()[255]


def test_the_screenshot_shows_the_balance_line_and_the_chain_markers(
    stack: Stack, client: dict[str, Any], chromium: str, tmp_path: Path
) -> None:
    png = tmp_path / "console.png"
    url = console_url(stack, client["id"], stack.auditor_token)
    run_chromium(chromium, tmp_path, url, screenshot=png)
    assert png.exists() and png.stat().st_size > 0
    if keep := os.environ.get("MAAS_TEST_CONSOLE_SCREENSHOT"):  # to look at it yourself
        shutil.copy(png, keep)
    with Image.open(png) as image:
        assert image.size == (WIDTH, HEIGHT)
        line = count_near(image, LINE_RGB)
        ok = count_near(image, OK_RGB)
    # The step line is 3 px wide across ~1100 px, plus its dots: thousands of pixels.
    assert line >= 2000, f"balance line: {line} pixels of #d62728"
    # Each "ok" marker is at least 64 x 16 px; every row fits in the window.
    rows = len(client["entries"])
    assert ok >= rows * 64 * 12, f"chain markers: {ok} pixels of #2ca02c for {rows} rows"


def test_a_wrong_token_and_an_unknown_client_give_clear_errors(
    stack: Stack, client: dict[str, Any], chromium: str, tmp_path: Path
) -> None:
    wrong = ConsoleDom(
        run_chromium(chromium, tmp_path, console_url(stack, client["id"], "not-the-token"))
    )
    assert wrong.state == "error"
    assert re.search(r"\b401\b", wrong.status), wrong.status
    assert wrong.rows == []
    unknown = ConsoleDom(
        run_chromium(chromium, tmp_path, console_url(stack, "nobody-here", stack.auditor_token))
    )
    assert unknown.state == "empty"
    assert "Unknown client" in unknown.status, unknown.status
    assert unknown.rows == []
