"""Browser tests of the web client: a real node process, real headless Chromium.

Playwright's *sync* API drives Debian's chromium (``/usr/bin/chromium``, or
``CHINWAG_CHROMIUM``); Playwright's own browser download is never used. The
project runs pytest with ``trio_mode = true``, so every test and fixture here
is a plain ``def``: the sync API runs its own event loop on a greenlet and
must not be called from inside trio.

Without chromium or playwright the tests are skipped, unless
``CHINWAG_REQUIRE_BROWSER=1`` (as in ``.ci/run``), which makes them fail.

Screenshots go to ``test-artifacts/screenshots/`` at the repository root, or
to ``$CHINWAG_ARTIFACTS/screenshots/``. A failing test also leaves a
screenshot of each of its open pages there (``FAILED-<test>-<n>.png``; an
expected failure, ``XFAIL-<test>-<n>.png``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..integration.procs import SyncNode, cli_env

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHINWAG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE_BROWSER = os.environ.get("CHINWAG_REQUIRE_BROWSER") == "1"
PASSWORD = "correct horse battery staple"
NODE_NAME = "kitchen"
#: Every Playwright wait in these tests is bounded by this (ms) unless a test says otherwise.
TIMEOUT_MS = 10_000


def artifacts_dir() -> Path:
    base = os.environ.get("CHINWAG_ARTIFACTS")
    return Path(base) if base else REPO_ROOT / "test-artifacts"


def screenshots_dir() -> Path:
    path = artifacts_dir() / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- the node process


class NodeProcess(SyncNode):
    """The shared node process, plus set-up helpers over HTTP; its node id must
    survive a restart."""

    def __init__(self, data_dir: Path, home: Path, name: str = NODE_NAME) -> None:
        super().__init__(data_dir, home, name)
        self.node_id = ""

    def start(self, timeout: float = 20.0) -> None:
        super().start(timeout)
        info = self.well_known()
        if self.node_id:
            assert info["node_id"] == self.node_id, "the node id changed across a restart"
        self.node_id = info["node_id"]

    # -- HTTP helpers (setup only; the tests themselves go through the page)
    def http(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def well_known(self) -> dict[str, Any]:
        return self.http("GET", "/.well-known/chinwag")  # type: ignore[no-any-return]

    def signup(self, user: str, password: str = PASSWORD) -> None:
        self.http("POST", "/api/signup", {"user": user, "password": password})

    def login(self, user: str, password: str = PASSWORD) -> str:
        return self.http("POST", "/api/login", {"user": user, "password": password})["token"]  # type: ignore[no-any-return]

    def address(self, user: str) -> str:
        """``user@<node id>``: the web client's conversation key for a 1:1 chat."""
        return f"{user}@{self.node_id}"

    def group(self, name: str) -> str:
        return f"#{name}@{self.node_id}"

    @property
    def origin(self) -> str:
        return self.url.rstrip("/")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A running node (``kitchen``) on a random loopback port; always killed at the end."""
    proc = NodeProcess(tmp_path / "node", tmp_path / "home")
    try:
        proc.start()
        yield proc
    finally:
        proc.kill()


# ---------------------------------------------------------------- the browser


def _import_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _missing(f"playwright is not installed ({exc}); pip install '.[test]'")
    return sync_playwright


def _missing(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"CHINWAG_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Debian chromium for the tests in this folder.

    Package scope, not session: while Playwright's sync API is started, it
    leaves its asyncio loop set as the thread's running loop, and any later
    test that calls ``asyncio.run`` (textual's, in tests/cli) would fail with
    "cannot be called from a running event loop".
    """
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _missing(f"{CHROMIUM} not found (apt-get install chromium)")
    sync_playwright = _import_playwright()
    with sync_playwright() as playwright:
        from playwright.sync_api import expect

        expect.set_options(timeout=TIMEOUT_MS)
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


#: Runs in every page before the client: after each change to ``#messages``,
#: records any text shown more than once (tests use distinct texts per
#: conversation), so that a duplicate that shows only for a moment is caught too.
DUPLICATE_WATCH = """
(() => {
  let reported = 0;
  const check = () => {
    const list = document.getElementById("messages");
    if (!list) return;
    const byText = new Map();
    for (const li of list.querySelectorAll("li.message")) {
      const text = li.querySelector(".msg-text")?.textContent ?? "";
      if (!byText.has(text)) byText.set(text, []);
      byText.get(text).push({ id: li.dataset.id || "", state: li.dataset.state || "" });
    }
    for (const [text, copies] of byText) {
      if (copies.length > 1 && reported++ < 100) window.chinwagTestDuplicate({ text, copies });
    }
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true });
})();
"""


class Browsers:
    """Makes contexts and pages for one test; records page errors and requests.

    Each ``page()`` is a tab: the web client keeps its session in
    sessionStorage, so each tab is its own device. ``context()`` is a separate
    browser profile (separate localStorage and cookies).
    """

    def __init__(self, browser: Any, node: NodeProcess) -> None:
        self.browser = browser
        self.node = node
        self.contexts: list[Any] = []
        self.pages: list[Any] = []
        self.page_errors: list[str] = []
        self.requests: list[str] = []
        self.websockets: list[str] = []
        self._duplicates: list[dict[str, Any]] = []

    def context(self, **options: Any) -> Any:
        context = self.browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        context.on("request", lambda request: self.requests.append(request.url))
        context.on("page", self._watch)
        context.expose_function("chinwagTestDuplicate", self._report_duplicate)
        context.add_init_script(DUPLICATE_WATCH)
        self.contexts.append(context)
        return context

    def _watch(self, page: Any) -> None:
        self.pages.append(page)
        page.on("pageerror", lambda exc: self.page_errors.append(f"{page.url}: {exc}"))
        page.on("websocket", lambda ws: self.websockets.append(ws.url))

    def page(self, context: Any | None = None, **options: Any) -> Any:
        """A new tab (in a new context unless one is given), at the node's ``/``."""
        context = context or self.context(**options)
        page = context.new_page()
        page.goto(self.node.url)
        return page

    def _report_duplicate(self, duplicate: dict[str, Any]) -> None:
        self._duplicates.append(duplicate)

    def duplicates(self) -> list[dict[str, Any]]:
        """Every duplicate any page has shown so far (closed pages included)."""
        for page in self.pages:
            if not page.is_closed():
                page.evaluate("1")  # a round trip: reports in flight arrive
        return list(self._duplicates)

    def close(self) -> None:
        for context in self.contexts:
            try:
                context.close()
            except Exception:  # noqa: BLE001 - already closed by the test
                pass


@pytest.fixture
def browsers(request: pytest.FixtureRequest, browser: Any, node: NodeProcess) -> Iterator[Browsers]:
    made = Browsers(browser, node)
    try:
        yield made
        assert not made.page_errors, f"uncaught errors in the page: {made.page_errors}"
        duplicates = made.duplicates()
        assert not duplicates, f"a message was shown more than once: {duplicates}"
    finally:
        call = request.node.stash.get(_REPORTS, {}).get("call")
        if call is not None and (call.failed or hasattr(call, "wasxfail")):
            prefix = "XFAIL" if hasattr(call, "wasxfail") else "FAILED"
            _failure_screenshots(prefix, request.node.name, made)
            print(f"--- node output ---\n{node.log()}")
        made.close()


def _failure_screenshots(prefix: str, test: str, made: Browsers) -> None:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", test)
    for n, page in enumerate(made.pages):
        try:
            if not page.is_closed():
                page.screenshot(path=str(screenshots_dir() / f"{prefix}-{safe}-{n}.png"))
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


@pytest.fixture
def screenshot() -> Callable[[Any, str], Path]:
    """``screenshot(page, "chat-1to1")`` saves ``<artifacts>/screenshots/chat-1to1.png``."""

    def take(page: Any, name: str) -> Path:
        path = screenshots_dir() / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


# ---------------------------------------------------------------- a second, federated node


def _cli(node: NodeProcess, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "chinwag.cli", *args, "--data", str(node.data_dir)],
        capture_output=True,
        text=True,
        env=cli_env(node.home),
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"chinwag {' '.join(args)}: {result.stderr}"
    return result.stdout


def link_nodes(a: NodeProcess, b: NodeProcess, timeout: float = 20.0) -> None:
    """Each node adds the other as a peer (``chinwag peers add URL#ID``); waits,
    bounded, until both report the link as ``linked``."""
    _cli(a, "peers", "add", f"{b.origin}#{b.node_id}")
    _cli(b, "peers", "add", f"{a.origin}#{a.node_id}")
    deadline = time.monotonic() + timeout
    while True:
        states = {
            n.name: [p.get("link") for p in json.loads(_cli(n, "status", "--json"))["peers"]]
            for n in (a, b)
        }
        if all(s == ["linked"] for s in states.values()):
            return
        assert time.monotonic() < deadline, f"the nodes did not link: {states}"
        time.sleep(0.1)


@pytest.fixture
def attic(tmp_path: Path, node: NodeProcess) -> Iterator[NodeProcess]:
    """A second node, ``attic``, federated with ``node`` (``kitchen``): both
    have added each other as peers and the link is up. Always killed at the end."""
    proc = NodeProcess(tmp_path / "attic", tmp_path / "attic-home", name="attic")
    try:
        proc.start()
        link_nodes(node, proc)
        yield proc
    finally:
        proc.kill()
