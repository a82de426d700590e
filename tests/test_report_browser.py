"""The data card in a real browser: Debian's headless Chromium opens card.html from disk.

It must load with no console error, no exception and no network request (every image is a
data: URI, the CSS is inline), every image must decode (naturalWidth > 0), and a screenshot
must not be blank. Chromium is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: JSON messages separated by NUL bytes on file descriptors 3 and
4), so the test needs no driver and no Python package beyond the standard library (and
Pillow, which matplotlib brings, to count colours in the screenshot).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import run_cli
from test_report_fixture import make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-pipe", "--window-size=1100,1400"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs Debian's chromium; "
                                                          "apt-get install chromium)")


class Browser:
    """A headless Chromium and a DevTools session with one page, over the debugging pipe."""

    def __init__(self, profile: str):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds() -> None:  # in the child: the protocol lives on fds 3 (in) and 4 (out)
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)   # out of the way of 3 and 4 first
            os.dup2(r, 3)
            os.dup2(w, 4)

        # close_fds=False: the dup2'd fds 3 and 4 must survive into chromium; every other fd
        # Python opened is close-on-exec anyway.
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id, self.events, self.session = b"", 0, [], None

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, timeout: float = 30, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id:
                assert "error" not in m, m
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            m = self._read(deadline)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self._r)
        os.close(self._w)


def _distinct_colours(png: bytes) -> int:
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    return len(im.getcolors(maxcolors=1 << 20) or [])


def test_card_in_headless_chromium(tmp_path):
    run = make_run(tmp_path / "run")
    proc = run_cli("report", str(run))
    assert proc.returncode == 0, proc.stderr
    card = (run / "card" / "card.html").resolve()
    with tempfile.TemporaryDirectory() as profile:
        b = Browser(profile)
        try:
            target = b.call("Target.createTarget", url="about:blank")["targetId"]
            b.session = b.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                b.call(f"{domain}.enable")
            b.events.clear()
            b.call("Page.navigate", url=card.as_uri())
            b.wait_for("Page.loadEventFired")
            images = b.call("Runtime.evaluate", returnByValue=True, expression=(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.src.slice(0, 22)])"))
            height = b.call("Runtime.evaluate", returnByValue=True,
                            expression="document.documentElement.scrollHeight")["result"]["value"]
            shot = base64.b64decode(b.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                           clip={"x": 0, "y": 0, "width": 1100, "height": min(height, 6000),
                                                 "scale": 1})["data"])
        finally:
            b.close()
    rep = json.loads((run / "card" / "report.json").read_text())
    imgs = images["result"]["value"]
    assert len(imgs) == len(rep["images"]) > 5
    assert all(ok and width > 0 and src == "data:image/png;base64," for ok, width, src in imgs), imgs
    requests = [e["params"]["request"]["url"] for e in b.events if e.get("method") == "Network.requestWillBeSent"]
    assert [u for u in requests if not u.startswith(("data:", card.as_uri()))] == []
    errors = [e for e in b.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")]
    assert errors == []
    (tmp_path / "card.png").write_bytes(shot)
    assert shot.startswith(b"\x89PNG") and _distinct_colours(shot) > 50
