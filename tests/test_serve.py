"""The model server: the pure parts (upload checks, areas, the bounded pool), then HTTP against a real
``unetkit serve`` subprocess on loopback: good images, every kind of bad upload, 20 concurrent requests."""

import base64
import io
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tifffile
from PIL import Image

import unetkit
from unetkit.cli import main
from unetkit.data.synthetic import synthetic_cells
from unetkit.report import overlay
from unetkit.commands import Limits
from unetkit.data.io import sniff_bytes as sniff
from unetkit.server.core import InferencePool, RequestError, class_areas, decode_upload, header_pixels

from tests.conftest import TINY_MODEL


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """``unetkit serve`` in a subprocess on a free loopback port; returns once /health answers."""
    port = free_port()
    return launch(["-m", "unetkit", "serve", "--model", str(model), "--port", str(port), *flags], port)


def launch(argv: list[str], port: int, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """``python ARGV`` (a server on ``port``) in a subprocess; returns once /health answers."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not answer /health within 120 s")


def stop_server(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


@pytest.fixture(scope="module")
def model(tiny_data, tmp_path_factory) -> Path:
    """A tiny binary model, exported to ONNX."""
    root = tmp_path_factory.mktemp("serve")
    unetkit.train(data=str(tiny_data), out=str(root / "exp"), epochs=1, steps_per_epoch=2, seed=0, **TINY_MODEL)
    return unetkit.export(root / "exp" / "best.pt", root / "model.onnx")


@pytest.fixture(scope="module")
def server(model):
    proc, url = start_server(model, "--max-upload-mb", "1", "--max-pixels", "300000", "--jobs", "2")
    yield proc, url
    out = stop_server(proc)
    assert "Application shutdown complete" in out  # a graceful stop on SIGTERM (uvicorn then re-raises it: exit -15)
    assert "Traceback" not in out  # no bad upload ever crashed a request handler


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    return synthetic_cells((150, 170), np.random.default_rng(7))[0]  # (H, W) uint8


# --- without HTTP -------------------------------------------------------------------------------


def test_sniff_knows_the_formats_by_their_first_bytes():
    assert sniff(png(np.zeros((2, 2), np.uint8))) == ".png"
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((2, 2), np.uint16))
    assert sniff(buffer.getvalue()) == ".tif"
    assert sniff(b"\xff\xd8\xff\xe0") == ".jpg" and sniff(b"BM\x00") == ".bmp"
    assert sniff(b"GIF89a") is None and sniff(b"") is None


def test_decode_upload_checks_type_size_and_content():
    limits = Limits(max_pixels=100)
    image = decode_upload(png(np.arange(12, dtype=np.uint8).reshape(3, 4)), "a.png", "image/png", limits)
    assert image.shape == (3, 4, 1) and image[2, 3, 0] == 11
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.full((5, 6), 4000, np.uint16))
    assert decode_upload(buffer.getvalue(), "b.tif", "application/octet-stream", limits).dtype == np.uint16  # never rescaled
    cases = [
        (b"hello", "text/plain", 415, "a.txt: content type 'text/plain' is not an image"),
        (b"hello", "image/png", 415, "a.txt: not a PNG, JPEG, TIFF or BMP file"),
        (b"", "image/png", 422, "a.txt: the file is empty"),
        (png(np.zeros((11, 10), np.uint8)), "image/png", 413, "11 x 10 = 110 pixels exceeds this server's limit of 100"),
        (png(np.zeros((8, 8), np.uint8))[:40], "image/png", 422, "a.txt: cannot read image"),
    ]
    for data, kind, status, message in cases:
        with pytest.raises(RequestError, match=message) as error:
            decode_upload(data, "a.txt", kind, limits)
        assert error.value.status == status and "/tmp" not in error.value.message  # the temporary file is not named


def tiff_bytes(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def tiff_series(*arrays: np.ndarray) -> bytes:
    """One TIFF holding each array as a series of its own."""
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tif:
        for array in arrays:
            tif.write(array)
    return buffer.getvalue()


def apng(frames: int, shape: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    images = [Image.fromarray(np.full(shape, 40 * i, np.uint8)) for i in range(frames)]
    images[0].save(buffer, format="PNG", save_all=True, append_images=images[1:])
    return buffer.getvalue()


@pytest.mark.parametrize("name, data, pages, pixels", [
    ("one page", tiff_bytes(np.zeros((30, 40), np.uint8)), 1, 1200),
    ("pages", tiff_bytes(np.zeros((5, 30, 40), np.uint8)), 5, 6000),
    ("RGB samples count once", tiff_bytes(np.zeros((30, 40, 3), np.uint8), photometric="rgb"), 1, 1200),
    ("two series", tiff_series(np.zeros((30, 40), np.uint8), np.zeros((10, 10), np.uint16)), 2, 1200 + 100),
    ("PNG", png(np.zeros((30, 40), np.uint8)), 1, 1200),
    ("animated PNG", apng(3, (30, 40)), 3, 3600),
])  # fmt: skip
def test_header_pixels_counts_every_page_and_frame(tmp_path, name, data, pages, pixels):
    path = tmp_path / f"upload{sniff(data)}"
    path.write_bytes(data)
    assert header_pixels(path)[:2] == (pages, pixels)


def test_header_pixels_refuses_empty_pages_and_too_many_bands(tmp_path):
    path = tmp_path / "upload.tif"
    with pytest.warns(UserWarning, match="zero-size"):
        path.write_bytes(tiff_bytes(np.zeros((0, 7), np.uint8)))
    with pytest.raises(unetkit.UnetkitError, match=r"page 1 has no pixels \(0 x "):
        header_pixels(path)
    path.write_bytes(tiff_bytes(np.zeros((4, 4, 17), np.uint8), photometric="minisblack", planarconfig="contig"))
    with pytest.raises(unetkit.UnetkitError, match="page 1 has 17 samples per pixel; an image has at most 16 bands"):
        header_pixels(path)


def test_decode_upload_counts_all_pages_before_decoding(monkeypatch):
    import unetkit.server.core as core

    monkeypatch.setattr(core, "read_image", lambda path: pytest.fail("decoded before the pixel count"))
    limits = Limits(max_pixels=5000)
    cases = [
        (tiff_bytes(np.zeros((6, 30, 40), np.uint8)), "6 pages or frames with 7,200 pixels in all exceed this server's limit of 5,000"),
        (apng(5, (30, 40)), "5 pages or frames with 6,000 pixels in all exceed"),
        (tiff_bytes(np.zeros((1100, 2, 2), np.uint8)), "more than 1024 pages; send one image per request"),
    ]
    for data, message in cases:
        with pytest.raises(RequestError, match=message) as error:
            decode_upload(data, "stack.tif", "image/tiff", limits)
        assert error.value.status == 413
    with pytest.warns(UserWarning, match="zero-size"):
        empty_second_page = tiff_series(np.zeros((3, 3), np.uint8), np.zeros((0, 3), np.uint8))
    with pytest.raises(RequestError, match="stack.tif: page 2 has no pixels") as error:
        decode_upload(empty_second_page, "stack.tif", "image/tiff", limits)
    assert error.value.status == 422


def test_decode_upload_answers_422_whatever_the_decoder_raises(monkeypatch):
    import unetkit.server.core as core

    def broken(path):
        raise struct.error("unpack requires a buffer of 4 bytes")  # not one of the errors io.py expects

    monkeypatch.setattr(core, "read_image", broken)
    with pytest.raises(RequestError, match=r"odd.png: cannot read image \(unpack requires a buffer of 4 bytes\)") as error:
        decode_upload(png(np.zeros((3, 3), np.uint8)), "odd.png", "image/png", Limits())
    assert error.value.status == 422


def test_class_areas_count_every_class():
    mask = np.array([[0, 0, 2], [2, 2, 2]], np.uint8)
    areas = class_areas(mask, ["bg", "a", "b"], [(0, 0, 0), (1, 2, 3), (4, 5, 6)])
    assert [(a["name"], a["pixels"], a["fraction"], a["color"]) for a in areas] == [("bg", 2, 2 / 6, [0, 0, 0]), ("a", 0, 0.0, [1, 2, 3]), ("b", 4, 4 / 6, [4, 5, 6])]


def test_pool_admits_jobs_plus_queue_then_refuses():
    pool = InferencePool(jobs=1, max_queue=2)
    for _ in range(3):
        pool.admit()
    with pytest.raises(RequestError, match="busy") as error:
        pool.admit()
    assert error.value.status == 503
    pool.release()
    pool.admit()  # a freed slot is usable again
    assert pool.run(sum, [1, 2]).result(timeout=10) == 3
    deadline = time.monotonic() + 10
    while pool.admitted != 2 and time.monotonic() < deadline:  # run() gives its slot back when the job ends
        time.sleep(0.01)
    assert pool.admitted == 2
    pool.shutdown()
    with pytest.raises(RequestError, match="shutting down") as error:
        pool.run(sum, [1])
    assert error.value.status == 503 and pool.admitted == 1  # the refused job's slot went back


@pytest.mark.parametrize("option, value", [("max_upload_mb", 0), ("max_pixels", 0), ("jobs", 0), ("max_queue", -1)])
def test_limits_refuse_nonsense(option, value):
    with pytest.raises(unetkit.UnetkitError, match=f"--{option.replace('_', '-')} must be"):
        Limits(**{option: value})


# --- a real server ------------------------------------------------------------------------------


def test_health_describes_the_model_and_limits(server, model):
    _, url = server
    info = httpx.get(f"{url}/health").json()
    assert info["status"] == "ok" and info["model"] == model.name and info["backend"] == "onnxruntime"
    assert info["classes"] == ["background", "foreground"] and info["in_channels"] == 1 and info["busy"] == 0
    assert info["limits"] == {"max_upload_mb": 1.0, "max_pixels": 300000, "jobs": 2, "max_queue": 32, "body_timeout": 30.0}


def test_listens_on_loopback_only(server):
    proc, _ = server
    addresses = {c.laddr.ip for c in psutil.Process(proc.pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    assert addresses == {"127.0.0.1"}


def test_predict_returns_the_mask_overlay_and_areas(server, model, cells):
    _, url = server
    seg = unetkit.load(model)
    want = seg.predict_mask(cells[..., None])  # (H, W): the same ONNX model, in this process
    r = httpx.post(f"{url}/predict", files={"file": ("cells.png", png(cells), "image/png")}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(decode_png(r.content), want)

    r = httpx.post(f"{url}/predict?format=overlay", files={"file": ("cells.png", png(cells), "image/png")}, timeout=60)
    np.testing.assert_array_equal(decode_png(r.content), overlay(cells[..., None], want, seg.colors, seg.classes))

    r = httpx.post(f"{url}/predict?format=json&overlay=true", files={"file": ("cells.png", png(cells), "image/png")}, timeout=60)
    body = r.json()
    assert (body["file"], body["height"], body["width"], body["channels"]) == ("cells.png", 150, 170, 1)
    counts = np.bincount(want.ravel(), minlength=2)
    assert [(c["name"], c["pixels"]) for c in body["classes"]] == [("background", counts[0]), ("foreground", counts[1])]
    assert sum(c["fraction"] for c in body["classes"]) == pytest.approx(1.0)
    assert body["instances"]["method"] == "components" and body["instances"]["count"] == len(body["instances"]["objects"])
    np.testing.assert_array_equal(decode_png(base64.b64decode(body["mask_png"])), want)
    assert decode_png(base64.b64decode(body["overlay_png"])).shape == (150, 170, 3)

    r = httpx.post(f"{url}/predict?filename=raw.png", content=png(cells), headers={"content-type": "image/png"}, timeout=60)
    np.testing.assert_array_equal(decode_png(r.content), want)  # the raw body works like the form field


def _truncated_tiff() -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.random.default_rng(0).integers(0, 60000, (200, 200), dtype=np.uint16))
    return buffer.getvalue()[:5000]


BAD_UPLOADS = [  # name, bytes, declared type, status, message
    ("notes.txt", b"just text", "text/plain", 415, "notes.txt: content type 'text/plain' is not an image"),
    ("fake.png", b"<html>not an image</html>", "image/png", 415, "fake.png: not a PNG, JPEG, TIFF or BMP file"),
    ("empty.png", b"", "image/png", 422, "empty.png: the file is empty"),
    ("cut.png", png(synthetic_cells((120, 120), np.random.default_rng(1))[0])[:3000], "image/png", 422, "cut.png: cannot read image"),
    ("cut.tif", _truncated_tiff(), "image/tiff", 422, "cut.tif: cannot read image"),
    ("huge.png", png(np.zeros((600, 600), np.uint8)), "image/png", 413, "600 x 600 = 360,000 pixels exceeds this server's limit of 300,000"),
    ("noise.png", png(np.random.default_rng(2).integers(0, 255, (1100, 1100), dtype=np.uint8)), "image/png", 413,
     "exceeds this server's limit of 1 MB"),
    ("rgb.png", png(np.full((30, 30, 3), [10, 200, 30], np.uint8)), "image/png", 422, "rgb.png has 3 channel(s); this model was trained on 1"),
]  # fmt: skip


@pytest.mark.parametrize("name, data, kind, status, message", [pytest.param(*case, id=case[0]) for case in BAD_UPLOADS])
def test_bad_uploads_get_a_4xx_with_a_reason(server, name, data, kind, status, message):
    proc, url = server
    r = httpx.post(f"{url}/predict", files={"file": (name, data, kind)}, timeout=60)
    assert r.status_code == status and message in r.json()["detail"], r.text
    assert proc.poll() is None and httpx.get(f"{url}/health").json()["busy"] == 0  # still serving, no slot leaked


def test_oversize_chunked_upload_is_cut_off(server):
    _, url = server
    chunks = (b"\x89PNG\r\n\x1a\n" + bytes(2**16) for _ in range(40))  # 2.5 MB with no Content-Length
    r = httpx.post(f"{url}/predict", content=chunks, headers={"content-type": "image/png"}, timeout=60)
    assert r.status_code == 413 and "1 MB" in r.json()["detail"]


def test_malformed_requests(server):
    _, url = server
    r = httpx.post(f"{url}/predict?format=tiff", files={"file": ("a.png", b"x", "image/png")})
    assert r.status_code == 400 and "format='tiff' is not one of png, json, overlay" in r.json()["detail"]
    r = httpx.post(f"{url}/predict", files={"other": ("a.png", b"x", "image/png")})
    assert r.status_code == 422 and "multipart field 'file'" in r.json()["detail"]
    good = png(np.zeros((9, 9), np.uint8))
    r = httpx.post(f"{url}/predict", files=[("file", ("a.png", good, "image/png")), ("file", ("b.png", good, "image/png"))])
    assert r.status_code == 400 and r.json()["detail"] == "the form holds more than one file; send one image as the multipart field 'file'"
    r = httpx.post(f"{url}/predict", content=b"--x\r\nbroken\r\n\r\n", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and r.json()["detail"].startswith("malformed multipart form (")
    r = httpx.post(f"{url}/predict?overlay=maybe", files={"file": ("a.png", good, "image/png")})
    assert r.status_code == 400 and r.json()["detail"].startswith("query parameter overlay='maybe': Input should be a valid boolean")


def test_twenty_concurrent_requests_succeed_in_bounded_memory(server, model):
    proc, url = server
    rng = np.random.default_rng(3)
    images = [synthetic_cells((256, 256), rng)[0] for _ in range(4)]
    seg = unetkit.load(model)
    want = [seg.predict_mask(im[..., None]) for im in images]
    process = psutil.Process(proc.pid)
    before = process.memory_info().rss
    peak, done = [before], threading.Event()

    def watch():
        while not done.wait(0.05):
            peak.append(process.memory_info().rss)

    def send(i: int) -> tuple[int, int, bytes]:
        r = httpx.post(f"{url}/predict", files={"file": (f"{i}.png", png(images[i % 4]), "image/png")}, timeout=120)
        return i, r.status_code, r.content

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(send, range(20)))
    done.set()
    watcher.join()
    assert [status for _, status, _ in results] == [200] * 20
    for i, _, content in results:
        np.testing.assert_array_equal(decode_png(content), want[i % 4])
    assert max(peak) < 1.5 * 2**30, f"server RSS peaked at {max(peak) / 2**20:.0f} MB"
    assert max(peak) - before < 400 * 2**20, f"server RSS grew from {before / 2**20:.0f} to {max(peak) / 2**20:.0f} MB"
    assert httpx.get(f"{url}/health").json()["busy"] == 0


def test_the_page_and_its_files_are_served_with_a_strict_policy(server):
    _, url = server
    r = httpx.get(f"{url}/")
    assert r.status_code == 200 and "Drop an image here" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "http" not in r.text.replace("http-equiv", "")  # nothing fetched from elsewhere
    for asset in ("app.js", "style.css"):
        r = httpx.get(f"{url}/static/{asset}")
        assert r.status_code == 200 and "http://" not in r.text and "https://" not in r.text


def test_serve_refuses_bad_options(model, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", str(model), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", "--model", str(model), "--jobs", "0"]) == 2
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err
    assert main(["serve", "--model", str(model.parent / "missing.onnx")]) == 2
    assert "missing.onnx: ONNX model not found" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_create_app_serves_a_checkpoint_in_process(model, cells):
    from fastapi.testclient import TestClient

    from unetkit.inference.options import InferenceOptions
    from unetkit.loading import load_segmenter
    from unetkit.server.app import create_app

    seg = load_segmenter(model.parent / "exp" / "best.pt", InferenceOptions(precision="fp32"))
    with TestClient(create_app(seg, Limits(jobs=1, max_queue=0), name="best.pt")) as client:
        assert client.get("/health").json()["backend"] == "pytorch"
        r = client.post("/predict", files={"file": ("cells.png", png(cells), "image/png")})
        assert r.status_code == 200
        np.testing.assert_array_equal(decode_png(r.content), unetkit.load(model).predict_mask(cells[..., None]))  # PyTorch == ONNX
