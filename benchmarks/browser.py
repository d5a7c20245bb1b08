"""Headless Chromium, driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``):
open a page, wait in real time, bounded, until a check run inside the page says it has drawn
what it should, then take the screenshot and the text of what it shows.

A fixed ``--virtual-time-budget`` is not enough for the MLflow UI: its charts fetch their
history and draw in real time, so on a busy machine a screenshot taken after any budget could
show loading spinners. Here the page's own state decides. The protocol needs no extra package:
JSON messages that end in a NUL byte, written to the browser's file descriptor 3 and read from
its descriptor 4.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


class BrowserError(RuntimeError):
    """Chromium did not start, stopped answering, or exited."""


class PageError(BrowserError):
    """Chromium answered with an error: a command it refused, a script that threw (while a
    page loads, its scripts' context can vanish under a check)."""


@dataclass
class Page:
    """What one page showed: ``ready`` (the check's verdict at the end), ``why`` (its reason
    when not ready), ``data`` (what the check read from the page), ``text`` (its title and
    visible text) and the seconds it took."""
    ready: bool
    why: str
    data: dict = field(default_factory=dict)
    text: str = ""
    seconds: float = 0.0


class Browser:
    """One headless Chromium with a new, empty profile; ``with Browser(path) as b: b.open(...)``."""

    def __init__(self, binary: str, window: tuple[int, int] = (1600, 1300)):
        self.profile = tempfile.mkdtemp(prefix="bpb-chromium-")
        self.log = tempfile.TemporaryFile()
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        # descriptors above 4, so that placing them at 3 and 4 in the child overwrites neither
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        os.close(to_browser)
        os.close(from_browser)

        def wire():                  # in the child, before exec: the protocol's descriptors
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)
        try:
            self.proc = subprocess.Popen(
                [binary, *FLAGS, f"--window-size={window[0]},{window[1]}", f"--user-data-dir={self.profile}",
                 "--remote-debugging-pipe", "about:blank"], stdin=subprocess.DEVNULL, stdout=self.log,
                stderr=self.log, preexec_fn=wire, close_fds=False, start_new_session=True)
        finally:
            for fd in high:
                os.close(fd)
        self._buffer, self._next_id, self.session = b"", 0, None
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.call("Emulation.setDeviceMetricsOverride",          # the page's viewport: the whole window
                      {"width": window[0], "height": window[1], "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    # ---- the protocol ------------------------------------------------------------------------
    def call(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        """Send one command (to the attached page, once there is one) and return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session is not None:
            message["sessionId"] = self.session
        try:
            os.write(self._out, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"Chromium exited: {self._last_words()}") from None
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._in], [], [], left)[0]:
                    raise BrowserError(f"Chromium did not answer {method} within {timeout:.0f} s")
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited: {self._last_words()}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:      # anything else is an event: not needed here
                if "error" in reply:
                    raise PageError(f"{method}: {reply['error'].get('message', reply['error'])}")
                return reply.get("result", {})

    def _last_words(self) -> str:
        self.log.seek(0)
        return self.log.read()[-500:].decode(errors="replace").strip() or f"exit status {self.proc.poll()}"

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise PageError(f"the page's script failed: {details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")

    def blank(self, wait: float = 10.0):
        """Load about:blank, and wait (``wait`` seconds at most) until it has."""
        self.call("Page.navigate", {"url": "about:blank"})
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if self.evaluate("location.href + ' ' + document.readyState") == "about:blank complete":
                    return
            except PageError:                    # between two documents
                pass
            time.sleep(0.05)

    # ---- pages -------------------------------------------------------------------------------
    def open(self, url: str, check: str, png: Path, wait: float = 60.0, tries: int = 2, poll: float = 0.5) -> Page:
        """Load ``url`` and poll ``check`` (a JavaScript expression that returns ``{ready, why,
        data}``) until it is ready, for at most ``wait`` seconds; not ready by then, load the
        page again, up to ``tries`` loads. Then save the screenshot into ``png`` and return
        what the page showed, ready or not: the caller decides what a page that is not means."""
        began = time.monotonic()
        state = {"ready": False, "why": "never checked", "data": {}}
        for _ in range(tries):
            self.blank()                         # a full load, even when only the #fragment differs
            failed = self.call("Page.navigate", {"url": url}).get("errorText")
            if failed:
                state = {"ready": False, "why": f"{url} did not load: {failed}", "data": {}}
                self.blank()                     # not Chromium's error page
                continue
            deadline = time.monotonic() + wait
            while True:
                try:
                    state = self.evaluate(check) or state
                except PageError as exc:
                    state = {"ready": False, "why": str(exc), "data": {}}
                if state.get("ready") or time.monotonic() >= deadline:
                    break
                time.sleep(poll)
            if state.get("ready"):
                break
        shot = self.call("Page.captureScreenshot", {"format": "png"})
        png.write_bytes(base64.b64decode(shot["data"]))
        text = self.evaluate("document.title + '\\n' + (document.body ? document.body.innerText : '')") or ""
        ready = bool(state.get("ready"))
        return Page(ready, "" if ready else state.get("why", ""), state.get("data") or {}, text, time.monotonic() - began)
