"""The report: pictures and tables on tiny arrays, and the HTML page opened in a real headless Chromium."""

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import unetkit
from unetkit.data.io import read_mask_raw, write_png
from unetkit.report import CORRECT, FALSE_NEGATIVE, FALSE_POSITIVE, IGNORED, WRONG_CLASS, confusion_png, error_map, format_table


def test_error_map_colours_false_positives_and_negatives_apart():
    truth = np.array([[0, 0, 1, 1, 2, -1]])
    pred = np.array([[0, 1, 0, 1, 1, 0]])
    out = error_map(pred, truth)
    assert [tuple(c) for c in out[0]] == [CORRECT, FALSE_POSITIVE, FALSE_NEGATIVE, CORRECT, WRONG_CLASS, IGNORED]


def test_confusion_png(tmp_path):
    confusion_png(tmp_path / "cm.png", np.array([[5, 1], [0, 4]]), ["background", "cell"])
    assert Image.open(tmp_path / "cm.png").format == "PNG"


@pytest.fixture(scope="module")
def predictions(tiny_data, tmp_path_factory):
    """Saved predictions of the tiny data set: the truth with a few pixels flipped."""
    out = tmp_path_factory.mktemp("preds")
    rng = np.random.default_rng(0)
    for mask in sorted((tiny_data / "masks").glob("*.png")):
        pred = (read_mask_raw(mask) > 0).astype(np.uint8)
        pred[rng.random(pred.shape) < 0.03] ^= 1
        write_png(out / mask.name, pred)
    return out


@pytest.fixture(scope="module")
def report(tiny_data, predictions, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    result = unetkit.evaluate(pred=predictions, truth=tiny_data, report_dir=folder, metrics="pixel,boundary,isbi,instances", progress=False)
    return folder, result


def test_report_files_and_table(report):
    folder, result = report
    assert json.loads((folder / "metrics.json").read_text()) == json.loads(json.dumps(result))
    keys = [f"cells_{i:03d}" for i in range(6)]
    for key in keys:
        for panel in ("input", "truth", "prediction", "errors"):
            assert Image.open(folder / "images" / f"{key}_{panel}.png").format == "PNG"
    assert Image.open(folder / "images" / "confusion.png").format == "PNG"
    page = (folder / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    assert page.count("<section class='sample'") == 6
    table = format_table(result)
    assert "boundary F1" in table and "warping error" in table and "AJI" in table and "6 image(s)" in table


# --- the page in a real browser ---------------------------------------------------------------------


class DevTools:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out)."""

    def __init__(self, chromium: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1200,900",
            "about:blank",
        ]
        # bash puts the pipe ends on the descriptors Chromium expects, then becomes Chromium (dash
        # cannot: it only knows single-digit descriptors)
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}', chromium, *flags],
            pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise ConnectionError("Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (TimeoutError, ConnectionError, RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._to_browser)
        os.close(self._from_browser)


def console_errors(events: list[dict]) -> list[str]:
    """Uncaught exceptions, console.error calls and browser log errors (e.g. an image that failed to load)."""
    errors = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("exception", {}).get("description") or params["exceptionDetails"]["text"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"{params['entry'].get('url', '')}: {params['entry']['text']}")
    return errors


@pytest.mark.slow
def test_report_page_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium); the page is not checked in a browser")
    folder, result = report
    browser = DevTools(chromium, tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            browser.send(domain, session)
        browser.send("Page.navigate", session, url=(folder / "index.html").resolve().as_uri())
        browser.wait_for("Page.loadEventFired")

        def js(expression: str):
            reply = browser.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
            assert "exceptionDetails" not in reply, reply["exceptionDetails"]
            return reply["result"].get("value")  # undefined has no value

        assert js("document.querySelectorAll('#per-image tbody tr').length") == len(result["per_image"]) == 6
        assert js("document.querySelectorAll('section.sample').length") == 6
        images = js("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
        assert len(images) == 6 * 4 + 1 and all(ok for _, ok in images), images
        # sorting: click "Rand error" twice -> descending; the first row is then the worst image
        column = js("Array.from(document.querySelectorAll('#per-image thead th')).findIndex(th => th.textContent === 'Rand error')")
        assert column > 0
        js(f"document.querySelectorAll('#per-image thead th')[{column}].click()")
        ascending = js(f"Array.from(document.querySelectorAll('#per-image tbody tr')).map(r => Number(r.cells[{column}].dataset.value))")
        assert ascending == sorted(ascending) and len(set(ascending)) > 1
        js(f"document.querySelectorAll('#per-image thead th')[{column}].click()")
        first = js("document.querySelector('#per-image tbody tr td a').textContent")
        assert first == max(result["per_image"], key=lambda r: r["rand_error"])["key"]
        shot = browser.send("Page.captureScreenshot", session, format="png")["data"]
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot))
        assert Image.open(tmp_path / "report.png").size[0] > 0
        assert console_errors(browser.events) == []
    finally:
        browser.close()
