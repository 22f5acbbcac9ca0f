"""Headless Chromium for tests that open static HTML pages and check what they did.

Why a hand-written DevTools client: a test only needs "load this file, tell me every error,
evaluate this, take a screenshot". Playwright and Selenium download their own browsers (not
possible offline) or add dependencies; the few Chrome DevTools Protocol (CDP) commands used
here fit in one small module over aiohttp, which is installed already.

Shape: one Chromium process per `Browser`, one websocket to its browser endpoint, and each
`Page` a flattened target session on that socket (messages carry a `sessionId`). The asyncio
loop runs in a daemon thread, so events (an error thrown by a timer after load) are recorded
while the test does other things; the public API is synchronous, and every call is bounded
by a timeout, so a wedged browser fails a test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

_EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_LISTENING = "DevTools listening on "
# --no-sandbox: the sandbox refuses to start as root (CI). --disable-dev-shm-usage: Docker's
# 64 MB /dev/shm crashes renderers. --hide-scrollbars: screenshots (and full-page ones) span
# the whole requested width. Port 0: Chromium picks a free port and prints it.
_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    """The first Chromium-family browser on PATH, or None (browser tests then skip, or fail in CI)."""
    for name in _EXECUTABLES:
        if path := shutil.which(name):
            return path
    return None


class JavaScriptError(RuntimeError):
    """An expression given to `Page.evaluate` threw; the message is the JavaScript exception."""


class _Connection:
    """One CDP websocket: numbered commands answered through futures, events routed by session."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self._http, self._ws = http, ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.listeners: dict[str, Callable[[str, dict], None]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, ws_url: str) -> _Connection:
        http = aiohttp.ClientSession()
        try:  # max_msg_size=0: full-page screenshots arrive as one multi-megabyte message
            return cls(http, await http.ws_connect(ws_url, max_msg_size=0))
        except BaseException:
            await http.close()
            raise

    async def send(self, method: str, params: dict | None = None, session: str | None = None):
        if self._reader.done():
            raise ConnectionError("Chromium closed the DevTools socket (it exited or crashed)")
        message = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future = self._pending[message["id"]] = asyncio.get_running_loop().create_future()
        try:
            await self._ws.send_str(json.dumps(message))
            return await future
        finally:
            self._pending.pop(message["id"], None)

    async def _read(self) -> None:
        try:
            async for frame in self._ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                future = self._pending.get(message.get("id"))
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(RuntimeError(f"CDP error: {message['error']}"))
                    else:
                        future.set_result(message.get("result", {}))
                elif listener := self.listeners.get(message.get("sessionId")):
                    listener(message["method"], message.get("params", {}))
        finally:  # the browser went away: no caller may wait for an answer that cannot come
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("Chromium closed the DevTools socket"))

    async def close(self) -> None:
        self._reader.cancel()
        await self._ws.close()
        await self._http.close()


class Browser:
    """A headless Chromium process with its own temporary profile; use it as a context manager.

    Leaving the `with` block (normally or by an exception) closes the browser, kills its
    process group if it does not exit within seconds, and removes the profile directory.
    """

    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise FileNotFoundError("no chromium, chromium-browser or google-chrome on PATH")
        self.timeout = timeout
        self._profile: Path | None = None
        self._process: subprocess.Popen | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._connection: _Connection | None = None

    def __enter__(self) -> Browser:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _start(self) -> None:
        self._profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        log = self._profile / "stderr.log"  # a file, not a pipe: Chromium's noise never blocks it
        command = [self.executable, *_FLAGS, f"--user-data-dir={self._profile}", "about:blank"]
        with log.open("wb") as sink:  # own session: its renderers can be killed as one group
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True
            )
        ws_url = self._wait_for_endpoint(log)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cdp", daemon=True)
        self._thread.start()
        self._connection = self._run(_Connection.open(ws_url), self.timeout, "connecting")

    def _wait_for_endpoint(self, log: Path) -> str:
        """The websocket address Chromium prints on stderr once its DevTools server listens."""
        deadline, text = time.monotonic() + self.timeout, ""
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith(_LISTENING):
                    return line[len(_LISTENING) :].strip()
            if self._process.poll() is not None:
                raise RuntimeError(f"Chromium exited with {self._process.returncode}:\n{text}")
            time.sleep(0.05)
        raise TimeoutError(f"Chromium printed no DevTools address in {self.timeout}s:\n{text}")

    def _run(self, coroutine: Coroutine, timeout: float, what: str) -> Any:
        """Run a coroutine on the CDP loop and wait for it, for at most `timeout` seconds."""
        if self._loop is None:
            coroutine.close()
            raise RuntimeError(f"{what}: the browser is closed")
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, timeout), self._loop)
        try:
            return future.result(timeout + 5)  # wait_for ends it first; +5 only if the loop hangs
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"{what} took more than {timeout:.3g}s") from None

    def open(
        self,
        url_or_path: str | os.PathLike,
        wait_for: str | None = None,
        timeout: float = 30.0,
        width: int = 1280,
        height: int = 900,
    ) -> Page:
        """Open a page in a new tab and wait for its load event, then for `wait_for` to be truthy.

        `wait_for` is a JavaScript expression polled every 50 ms, for pages that render after
        load (fetches, timers). If it stays falsy, AssertionError names it and the errors seen.
        """
        url, deadline = _as_url(url_or_path), time.monotonic() + timeout
        page = self._run(self._attach(width, height, timeout), timeout, f"opening a tab for {url}")
        try:
            page._run(page._navigate(url), deadline - time.monotonic(), f"loading {url}")
            if wait_for is not None:
                page._wait_for(wait_for, deadline - time.monotonic())
        except BaseException:
            page.close()
            raise
        page.load_seconds = time.monotonic() - page._navigated_at
        return page

    async def _attach(self, width: int, height: int, timeout: float) -> Page:
        target = await self._connection.send("Target.createTarget", {"url": "about:blank"})
        attached = await self._connection.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, target["targetId"], attached["sessionId"], timeout)
        self._connection.listeners[page._session] = page._on_event
        for domain in ("Runtime", "Log", "Page", "Network"):
            await page._send(f"{domain}.enable")
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        await page._send("Emulation.setDeviceMetricsOverride", metrics)
        return page

    def close(self) -> None:
        """Close Chromium (gracefully, else by killing its process group) and remove the profile."""
        if self._connection is not None:
            for coroutine in (self._connection.send("Browser.close"), self._connection.close()):
                with contextlib.suppress(Exception):  # gone already? the process is handled below
                    self._run(coroutine, 5, "closing Chromium")
            self._connection = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()
            self._loop = None
        if self._process is not None:
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:  # the leader still runs, so the group is still ours
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(5)
            self._process = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None


class Page:
    """One tab. `errors` keeps filling while the page lives: read it when the check is due."""

    def __init__(self, browser: Browser, target: str, session: str, timeout: float):
        self.url = ""
        self.errors: list[str] = []
        self.load_seconds = float("nan")
        self._browser, self._timeout = browser, timeout
        self._target, self._session = target, session  # CDP targetId and flattened sessionId
        self._requests: dict[str, str] = {}  # Network requestId -> URL, to name failed loads
        self._loaded = asyncio.Event()
        self._navigated_at = 0.0

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _run(self, coroutine: Coroutine, timeout: float, what: str) -> Any:
        try:
            return self._browser._run(coroutine, timeout, what)
        except TimeoutError as error:
            raise TimeoutError(f"{error}; errors so far: {self.errors}") from None

    async def _send(self, method: str, params: dict | None = None) -> dict:
        return await self._browser._connection.send(method, params, self._session)

    async def _navigate(self, url: str) -> None:
        self.url = url
        self._loaded.clear()
        self._navigated_at = time.monotonic()
        result = await self._send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise RuntimeError(f"could not open {url}: {result['errorText']}")
        await self._loaded.wait()

    def _wait_for(self, expression: str, timeout: float) -> None:
        failures: list[str] = []  # exceptions while polling: often why the condition never held

        async def poll() -> None:
            params = {"expression": f"!!({expression})", "returnByValue": True}
            while True:
                result = await self._send("Runtime.evaluate", params)
                if details := result.get("exceptionDetails"):
                    failures[:] = [_exception_text(details)]
                elif result["result"].get("value") is True:
                    return
                await asyncio.sleep(0.05)

        try:
            self._browser._run(poll(), max(timeout, 0.0), f"waiting for {expression!r}")
        except TimeoutError:
            raise AssertionError(
                f"wait_for {expression!r} was not truthy within {self._timeout:g}s of navigating"
                f" to {self.url}; last exception: {failures or None}; errors: {self.errors}"
            ) from None

    def _on_event(self, method: str, params: dict) -> None:
        """Record every kind of error a page can produce as one readable line with its source."""
        try:
            self._record(method, params)
        except Exception as error:  # a harness bug must fail the test, not stop the event reader
            self.errors.append(f"tests/browser.py could not read {method} {params}: {error!r}")

    def _record(self, method: str, params: dict) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Runtime.exceptionThrown":
            self.errors.append(_exception_text(params["exceptionDetails"]))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            words = [str(arg.get("value", arg.get("description", ""))) for arg in params["args"]]
            frames = params.get("stackTrace", {}).get("callFrames") or [{}]
            self.errors.append(f"console.{params['type']}: {' '.join(words)}{_at(**frames[0])}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry['source']} error: {entry['text']}{_at(**entry)}")
        elif method == "Network.requestWillBeSent":
            self._requests[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed":
            url = self._requests.get(params["requestId"], "an unknown URL")
            self.errors.append(f"failed to load {url}: {params['errorText']}")

    def evaluate(self, expression: str) -> Any:
        """The expression's value as JSON-like Python (promises awaited); JavaScriptError if it threw."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = self._run(self._send("Runtime.evaluate", params), self._timeout, repr(expression))
        if details := result.get("exceptionDetails"):
            raise JavaScriptError(f"{expression!r} threw {_exception_text(details)}")
        return result["result"].get("value")

    def text(self) -> str:
        """The rendered text of the page, as a user would select and copy it."""
        return self.evaluate("document.body ? document.body.innerText : ''")

    def screenshot(self, path: str | os.PathLike, full_page: bool = False) -> Path:
        """A PNG of the viewport, or of the whole document when `full_page`."""

        async def capture() -> str:
            params: dict[str, Any] = {"format": "png"}
            if full_page:
                size = (await self._send("Page.getLayoutMetrics"))["cssContentSize"]
                clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
                params |= {"captureBeyondViewport": True, "clip": {**clip, "scale": 1}}
            return (await self._send("Page.captureScreenshot", params))["data"]

        path = Path(path)
        path.write_bytes(base64.b64decode(self._run(capture(), self._timeout, "screenshot")))
        return path

    def close(self) -> None:
        """Close the tab; a no-op when the browser is closed, crashed or hung (it has to go anyway).

        Never raises, so that closing after a failure cannot hide the failure.
        """
        connection = self._browser._connection
        if connection is None or connection.listeners.pop(self._session, None) is None:
            return
        with contextlib.suppress(Exception):
            message = {"targetId": self._target}
            self._browser._run(connection.send("Target.closeTarget", message), 5, "closing a tab")


def _as_url(url_or_path: str | os.PathLike) -> str:
    if isinstance(url_or_path, str) and (
        "://" in url_or_path or url_or_path.startswith(("about:", "data:"))
    ):
        return url_or_path
    path = Path(url_or_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no page at {path}")
    return path.as_uri()


def _at(url: str = "", lineNumber: int | None = None, **_: Any) -> str:
    """' (url:line)' for an error line, with CDP's 0-based line made 1-based; '' when unknown."""
    if not url:
        return ""
    return f" ({url}:{lineNumber + 1})" if lineNumber is not None else f" ({url})"


def _exception_text(details: dict) -> str:
    """'Error: boom (file:///page.html:3)': the exception's first line, then where it was thrown."""
    description = details.get("exception", {}).get("description") or details.get("text", "")
    return f"{description.splitlines()[0] if description else 'exception'}{_at(**details)}"
