"""`datakit view` driven in a real headless Chromium (the DevTools-pipe driver of
test_report_browser.py, the project's one way of driving a browser): search, filter, open a
record, reject it, edit an output, choose a pair, reload and see the verdicts, then export and
check the files reflect them. Also: no console error, no request leaves the server.

Set DATAKIT_VIEW_SCREENSHOT=path.png to keep a screenshot of the page (docs/view.png)."""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time

import pytest

from helpers import jsonl, run_cli
from test_report_browser import CHROMIUM, Browser
from test_view_fixture import make_run, start_view

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

ALL = ["r-cats", "r-tea", "r-spring", "r-sky", "r-sum", "r-dogs", "x-cats2", "x-short"]
KEYS = {"Enter": ("Enter", 13, "\r"), "Escape": ("Escape", 27, "")}


class Page:
    def __init__(self, b: Browser):
        self.b = b

    def js(self, expr: str):
        r = self.b.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def wait(self, expr: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.js(f"(() => {{ try {{ return ({expr}); }} catch (e) {{ return false; }} }})()")
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expr}; page: {self.js('document.body.innerText')[:2000]}")

    def key(self, name: str, ctrl: bool = False) -> None:
        key, code, text = KEYS[name] if name in KEYS else (name, ord(name.upper()), name)
        common = {"key": key, "windowsVirtualKeyCode": code, "modifiers": 2 if ctrl else 0,
                  "code": key if len(key) > 1 else f"Key{key.upper()}"}
        self.b.call("Input.dispatchKeyEvent", type="keyDown", text=text if not ctrl else "", **common)
        self.b.call("Input.dispatchKeyEvent", type="keyUp", **common)

    def type(self, text: str) -> None:
        self.b.call("Input.insertText", text=text)

    def ids(self) -> list[str]:
        return self.js("[...document.querySelectorAll('#rows li')].map(li => li.dataset.id)")

    def expect(self, ids: list[str]) -> None:
        """Wait until the list shows exactly ``ids`` (a filter's request may still be on its way)."""
        self.wait("JSON.stringify([...document.querySelectorAll('#rows li')].map(li => li.dataset.id)) === "
                  + repr(json.dumps(ids, separators=(",", ":"))))

    def choose(self, select: str, value: str) -> None:
        self.js(f"(() => {{ const s = document.getElementById({select!r}); s.value = {value!r};"
                f" s.dispatchEvent(new Event('change')); }})()")

    def open(self, url: str) -> None:
        self.b.events.clear()
        self.b.call("Page.navigate", url=url)
        self.b.wait_for("Page.loadEventFired")
        self.wait("document.body.dataset.ready === '1'")


def test_review_in_the_browser_then_export(tmp_path):
    run = make_run(tmp_path / "run")
    proc, base, _ = start_view(run, "--reviewer", "ana")
    try:
        with tempfile.TemporaryDirectory() as profile:
            b = Browser(profile)
            try:
                target = b.call("Target.createTarget", url="about:blank")["targetId"]
                b.session = b.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
                for domain in ("Page", "Runtime", "Log", "Network"):
                    b.call(f"{domain}.enable")
                b.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
                _review(Page(b), base, run, tmp_path)
                events = list(b.events)
            finally:
                b.close()
    finally:
        proc.kill()
        proc.wait(10)
    urls = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(base) for u in urls), urls
    errors = [e for e in events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")]
    assert errors == []
    _exports_reflect_the_verdicts(run, tmp_path)


def _review(p: Page, base: str, run, tmp_path) -> None:
    p.open(base + "/")
    assert p.ids() == ALL
    # search (zh, then en), from the keyboard
    p.key("/")
    p.type("春天")
    p.expect(["r-spring"])
    p.js("(() => { const q = document.getElementById('q'); q.value = 'poem'; q.dispatchEvent(new Event('input')); })()")
    p.expect(["r-cats", "r-dogs", "x-cats2"])
    p.js("(() => { const q = document.getElementById('q'); q.value = ''; q.dispatchEvent(new Event('input')); q.blur(); })()")
    # filters: rejected by generate, then a teacher
    p.choose("status", "rejected")
    p.expect(["x-cats2", "x-short"])
    p.choose("status", "")
    p.choose("teacher", "deepseek")
    p.expect(["r-tea", "r-sky"])
    p.choose("teacher", "")
    p.expect(ALL)
    # open the first record (j) and reject it (r, a reason, Enter)
    p.key("j")
    p.wait("document.querySelector('.bar h2') && document.querySelector('.bar h2').textContent === 'r-cats'")
    assert "Whiskers in the sun" in p.js("document.getElementById('detail').innerText")     # candidates side by side
    assert "position bias" in p.js("document.getElementById('detail').innerText")
    p.key("r")
    p.wait("document.activeElement && document.activeElement.id === 'reject-reason'")
    p.type("dull poem")
    p.key("Enter")
    p.wait("document.querySelector('.bar').innerText.includes('rejected by ana: dull poem')")
    # next record (j), edit its output (e, Ctrl+Enter)
    p.key("j")
    p.wait("document.querySelector('.bar h2').textContent === 'r-tea'")
    p.key("e")
    p.wait("document.activeElement && document.activeElement.id === 'edit-box'")
    p.js("document.getElementById('edit-box').select()")
    p.type("Heat water to 80C, steep two minutes, pour.")
    p.key("Enter", ctrl=True)
    p.wait("document.querySelector('[data-field=output]') && document.querySelector('[data-field=output]')"
           ".textContent === 'Heat water to 80C, steep two minutes, pour.'")
    # the judge tied on r-spring: a person picks the pair
    p.key("j")
    p.wait("document.querySelector('.bar h2').textContent === 'r-spring'")
    p.choose("pick-chosen", "local#1")
    p.choose("pick-rejected", "local#0")
    p.js("document.getElementById('save-pair').click()")
    p.wait("document.querySelector('.cand.chosen') && document.querySelector('.cand.chosen').dataset.cand === 'local#1'")
    p.key("a")   # accept r-spring as well
    p.wait("document.querySelector('.bar').innerText.includes('accepted by ana')")
    # reload: the verdicts are on disk, not in the page
    p.b.call("Page.reload")
    p.wait("document.body.dataset.ready === '1' && document.querySelector('.bar h2') &&"
           " document.querySelector('.bar h2').textContent === 'r-spring'")
    assert p.js("document.querySelector('.cand.chosen').dataset.cand") == "local#1"
    badges = p.js("Object.fromEntries([...document.querySelectorAll('#rows li')].map(li => [li.dataset.id, li.innerText]))")
    assert "✗ human" in badges["r-cats"] and "edited" in badges["r-tea"] and "pair" in badges["r-spring"]
    p.choose("reviewed", "no")
    p.expect(["r-sky", "r-sum", "r-dogs", "x-cats2", "x-short"])
    p.choose("reviewed", "")
    p.expect(ALL)
    _screenshot(p, tmp_path)


def _screenshot(p: Page, tmp_path) -> None:
    p.js("document.querySelector('#rows li[data-id=\"r-tea\"]').click()")
    p.wait("document.querySelector('.bar h2').textContent === 'r-tea'")
    shot = base64.b64decode(p.b.call("Page.captureScreenshot", format="png")["data"])
    assert shot.startswith(b"\x89PNG") and len(shot) > 20_000
    (tmp_path / "view.png").write_bytes(shot)
    keep = os.environ.get("DATAKIT_VIEW_SCREENSHOT")
    if keep:
        with open(keep, "wb") as f:
            f.write(shot)


def _exports_reflect_the_verdicts(run, tmp_path) -> None:
    reviews = jsonl(run / "reviews.jsonl")
    assert [(r["record_id"], r["action"]) for r in reviews] == [
        ("r-cats", "reject"), ("r-tea", "edit"), ("r-spring", "choose"), ("r-spring", "accept")]
    assert {r["reviewer"] for r in reviews} == {"ana"}
    proc = run_cli("export", str(run), "--format", "dpo", "--out", str(tmp_path / "dpo.jsonl"))
    assert proc.returncode == 0, proc.stderr
    dpo = {r["id"]: r for r in jsonl(tmp_path / "dpo.jsonl")}
    assert "r-cats" not in dpo                                          # the judge's pair, rejected by a person
    assert dpo["r-spring"]["chosen_id"] == "local#1" and dpo["r-spring"]["basis"] == "human"
    proc = run_cli("export", str(run), "--response", "output", "--out", str(tmp_path / "sft.jsonl"))
    assert proc.returncode == 0, proc.stderr
    sft = {r["id"]: r for r in jsonl(tmp_path / "sft.jsonl")}
    assert "r-cats" not in sft
    assert sft["r-tea"]["messages"][-1]["content"] == "Heat water to 80C, steep two minutes, pour."
    proc = run_cli("export", str(run), "--reviewed-only", "--out", str(tmp_path / "mine.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["id"] for r in jsonl(tmp_path / "mine.jsonl")) == ["r-spring", "r-tea"]
    assert json.loads((run / "reviews.jsonl").read_text().splitlines()[1])["old"] == (
        "Heat water to 80C and steep for two minutes.")
