"""End to end in a real browser: headless Chromium opens the server's page, an image is dropped on it,
and the overlay, legend and areas appear. Skipped, with the reason, when Chromium is not installed."""

import base64
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import unetkit
from unetkit.data.synthetic import synthetic_cells

from tests.conftest import TINY_MODEL
from tests.test_serve import png, start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
#: Offline, quiet, no sandbox (containers): the browser contacts nothing but the test server.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"the browser test needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs Python Playwright: pip install playwright (no browser download)")

#: What a user's drag and drop does: a DataTransfer holding the file, dispatched as dragenter/dragover/drop.
DROP = """([b64, name]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type: "image/png" }));
    const zone = document.getElementById("drop");
    for (const type of ["dragenter", "dragover", "drop"]) {
        zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }
}"""


@pytest.fixture(scope="module")
def server(tiny_data, tmp_path_factory):
    """The server on a checkpoint (the PyTorch backend; tests/test_serve.py runs the ONNX one)."""
    root = tmp_path_factory.mktemp("browser")
    unetkit.train(data=str(tiny_data), out=str(root / "exp"), epochs=1, steps_per_epoch=2, seed=0, **TINY_MODEL)
    proc, url = start_server(root / "exp" / "best.pt", "--precision", "fp32")
    yield url, root / "exp" / "best.pt"
    stop_server(proc)


def test_dropping_an_image_shows_the_overlay_legend_and_areas(server, tmp_path):
    url, model = server
    image = synthetic_cells((120, 160), np.random.default_rng(11))[0]  # (H, W) uint8
    mask = unetkit.load(model, precision="fp32").predict_mask(image[..., None])
    counts = np.bincount(mask.ravel(), minlength=2)
    requested, errors = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("request", lambda r: requested.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/")
            # the page's policy forbids eval, so waits go through locators rather than wait_for_function
            sync_api.expect(page.locator("#model")).to_contain_text("background, foreground")
            page.evaluate(DROP, [base64.b64encode(png(image)).decode(), "cells.png"])
            sync_api.expect(page.locator("#result")).to_be_visible(timeout=60_000)
            overlay = page.locator("#overlay")
            overlay.evaluate("img => img.decode()")  # resolves once the overlay's pixels are ready
            assert overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [160, 120]
            rows = page.locator("#areas tbody tr")
            assert rows.count() == 2
            for i, name in enumerate(["background", "foreground"]):
                cells = rows.nth(i).locator("td").all_inner_texts()
                assert cells[1:3] == [name, f"{counts[i]:,}"]
                assert cells[3] == f"{100 * counts[i] / mask.size:.2f} %"
            assert "object(s) (components)" in page.inner_text("#instances")
            assert page.get_attribute("#mask-link", "download") == "cells_mask.png"
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert Image.open(shot).format == "PNG" and Image.open(shot).size[0] > 160

            # the file picker, with a file that is not an image: the page shows the server's reason
            page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
            sync_api.expect(page.locator("#error")).to_contain_text("notes.txt: content type 'text/plain' is not an image")
        finally:
            browser.close()
    assert not errors
    assert requested and all(u.startswith((url, "data:")) for u in requested), requested  # nothing from elsewhere
