"""Hostile requests against a real ``unetkit serve`` on loopback: every malformed request gets a 4xx with a
one-line reason (never a 5xx), nothing is left behind in the server's temporary folder, and clients that stall
mid-upload neither hold a worker slot nor starve the others.

The server runs the gray model with 2 jobs, a queue of 2, 1 MB uploads, 300,000 pixels and a body timeout of
2 s, in a subprocess whose TMPDIR is a folder of the test's.
"""

import io
import json
import os
import socket
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.corpus.kit import assert_no_output, bomb_png, log_case, png_bytes
from tests.test_serve import apng, free_port, launch, stop_server, tiff_bytes, tiff_series

BODY_TIMEOUT = 2.0
JOBS, QUEUE = 2, 2
GOOD = png_bytes(np.full((30, 40), 100, np.uint8))


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    spool = tmp_path_factory.mktemp("server-tmp")
    port = free_port()
    argv = ["-m", "unetkit", "serve", "--model", str(models["gray"]), "--port", str(port), "--max-upload-mb", "1", "--max-pixels", "300000",
            "--jobs", str(JOBS), "--max-queue", str(QUEUE), "--body-timeout", str(BODY_TIMEOUT)]
    proc, url = launch(argv, port, env={**os.environ, "TMPDIR": str(spool)})
    yield proc, url, port
    out = stop_server(proc)
    assert "Traceback" not in out and " 500 " not in out, out[-3000:]
    assert_no_output(spool)  # every upload's temporary file is gone


def detail(r: httpx.Response) -> str:
    return r.json()["detail"] if r.headers.get("content-type", "").startswith("application/json") else r.text


def check_refusal(status: int, message: str, want_status: int, fragment: str) -> None:
    log_case(f"HTTP {status}: {message}")
    assert status == want_status, message
    assert "\n" not in message and "Traceback" not in message and fragment in message, message


# --- malformed requests: a 4xx and one line each --------------------------------------------------


def _file(name: str, data: bytes, kind: str = "image/png") -> dict:
    return {"files": {"file": (name, data, kind)}}


def _raw(data: bytes, kind: str, **params) -> dict:
    return {"content": data, "headers": {"content-type": kind}, "params": params}


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


with warnings.catch_warnings():  # tifffile warns that a zero-size page is nonconformant: that is the point
    warnings.simplefilter("ignore", UserWarning)
    ZERO_HEIGHT, ZERO_SECOND_PAGE = tiff_bytes(np.zeros((0, 5), np.uint8)), tiff_series(np.zeros((4, 4), np.uint8), np.zeros((0, 4), np.uint8))

MALFORMED = {  # case: (request, status, fragment)
    "two files in one form": ({"files": [("file", ("a.png", GOOD, "image/png")), ("file", ("b.png", GOOD, "image/png"))]}, 400, "more than one file"),
    "form without a file field": ({"files": {"image": ("a.png", GOOD, "image/png")}}, 422, "multipart field 'file'"),
    "text in the file field": ({"files": {"other": ("a.png", GOOD, "image/png")}, "data": {"file": "hello"}}, 422, "no file in the form"),
    "empty form": (_raw(b"", "multipart/form-data; boundary=xyz"), 422, "no file in the form"),
    "form without boundary": (_raw(b"abc", "multipart/form-data"), 400, "malformed multipart form (Missing boundary"),
    "garbled form": (_raw(b"--xyz\r\nfoo\r\n\r\n", "multipart/form-data; boundary=xyz"), 400, "malformed multipart form"),
    "empty body": (_raw(b"", "image/png"), 422, "upload: the file is empty"),
    "HTML content type": (_raw(GOOD, "text/html"), 415, "content type 'text/html' is not an image"),
    "JSON body": (_raw(b"{}", "application/json"), 415, "content type 'application/json' is not an image"),
    "form-encoded body": ({"data": {"file": "x"}}, 415, "application/x-www-form-urlencoded"),
    "text named .png": (_file("notes.png", b"hello, not an image"), 415, "notes.png: not a PNG, JPEG, TIFF or BMP file"),
    "GIF": (_file("anim.gif", b"GIF89a" + bytes(30), "image/gif"), 415, "content type 'image/gif' is not an image"),
    "zero-height TIFF": (_file("flat.tif", ZERO_HEIGHT, "image/tiff"), 422, "flat.tif: page 1 has no pixels"),
    "empty second TIFF page": (_file("two.tif", ZERO_SECOND_PAGE, "image/tiff"), 422, "two.tif: page 2 has no pixels"),
    "17 samples per pixel": (_file("wide.tif", tiff_bytes(np.zeros((8, 8, 17), np.uint8), photometric="minisblack", planarconfig="contig"), "image/tiff"),
                             422, "17 samples per pixel"),
    "pages over --max-pixels": (_file("stack.tif", tiff_bytes(np.zeros((20, 200, 200), np.uint8)), "image/tiff"), 413,
                                "stack.tif: 20 pages or frames with 800,000 pixels in all exceed this server's limit of 300,000"),
    "animated PNG over --max-pixels": (_file("anim.png", apng(4, (300, 300))), 413, "anim.png: 4 pages or frames with 360,000 pixels"),
    "1100 pages": (_file("many.tif", tiff_bytes(np.zeros((1100, 2, 2), np.uint8)), "image/tiff"), 413, "more than 1024 pages"),
    "image over --max-pixels": (_file("big.png", png_bytes(np.zeros((600, 600), np.uint8))), 413, "600 x 600 = 360,000 pixels exceeds"),
    "decompression bomb": (_file("bomb.png", bomb_png()), 413, "bomb.png: the file claims more pixels"),
    "upload over --max-upload-mb": (_file("noise.png", png_bytes(np.random.default_rng(0).integers(0, 255, (1100, 1100), dtype=np.uint8))), 413,
                                    "exceeds this server's limit of 1 MB"),
    "truncated PNG": (_file("cut.png", png_bytes(np.random.default_rng(1).integers(0, 255, (200, 200), dtype=np.uint8))[:3000]), 422, "cut.png: cannot read image"),
    "PNG signature only": (_file("sig.png", b"\x89PNG\r\n\x1a\n"), 422, "sig.png: cannot read image"),
    "TIFF header and noise": (_file("junk.tif", b"II*\x00" + b"\xff" * 60, "image/tiff"), 422, "junk.tif: cannot read image"),
    "BMP header and zeros": (_file("junk.bmp", b"BM" + bytes(60), "image/bmp"), 422, "junk.bmp: cannot read image"),
    "JPEG marker and zeros": (_file("junk.jpg", b"\xff\xd8\xff" + bytes(60), "image/jpeg"), 422, "junk.jpg: cannot read image"),
    "NaN pixels": (_file("nan.tif", tiff_bytes(np.full((9, 9), np.nan, np.float32)), "image/tiff"), 422, "nan.tif"),
    "complex pixels": (_file("complex.tif", tiff_bytes(np.ones((9, 9), np.complex64)), "image/tiff"), 422, "complex.tif"),
    "3 pages for a gray model": (_file("rgb.tif", tiff_bytes(np.zeros((3, 20, 20), np.uint8), photometric="minisblack"), "image/tiff"), 422, "3 channel(s); this model was trained on 1"),
    "RGBA for a gray model": (_file("rgba.png", png_bytes(np.zeros((9, 9, 4), np.uint8))), 422, "rgba.png has 4 channel(s)"),
    "bad format": (dict(_file("a.png", GOOD), params={"format": "gif"}), 400, "format='gif' is not one of png, json, overlay"),
    "bad overlay flag": (dict(_file("a.png", GOOD), params={"overlay": "maybe"}), 400, "query parameter overlay='maybe'"),
    "control characters in the name": (_raw(b"junk", "image/png", filename="a\r\nX-Evil: 1.png"), 415, "a??X-Evil: 1.png: not a PNG"),
}  # fmt: skip


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_request(server, case):
    proc, url, _ = server
    request, status, fragment = MALFORMED[case]
    r = httpx.post(f"{url}/predict", timeout=30, **request)
    check_refusal(r.status_code, detail(r), status, fragment)
    assert proc.poll() is None and httpx.get(f"{url}/health").json()["busy"] == 0


@pytest.mark.parametrize("method, path, status", [("GET", "/predict", 405), ("PUT", "/predict", 405), ("GET", "/static/../../etc/passwd", 404), ("GET", "/nothing", 404)])
def test_wrong_routes(server, method, path, status):
    _, url, _ = server
    r = httpx.request(method, f"{url}{path}")
    check_refusal(r.status_code, detail(r), status, "the routes are GET /, GET /health and POST /predict")


# --- malformed HTTP and stalled uploads, on a raw socket ---------------------------------------------


def raw_exchange(port: int, data: bytes, wait: float = BODY_TIMEOUT + 10) -> tuple[int, str, float]:
    """Send ``data``, then read until the server closes the connection: (status, body, seconds until the answer)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)
        s.settimeout(wait)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():  # uvicorn's own 400 comes in chunks
        text = b""
        while body and (size := int(body.split(b"\r\n", 1)[0], 16)):
            _, _, body = body.partition(b"\r\n")
            text, body = text + body[:size], body[size + 2 :]
        body = text
    return int(head.split()[1]), body.decode(errors="replace"), time.monotonic() - start


def post_head(*headers: str) -> bytes:
    return ("POST /predict HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()


STALLED = post_head("Content-Type: image/png", "Content-Length: 50000")
RAW = {  # case: (bytes sent before the client goes quiet, status, fragment)
    "body stalls after 8 bytes": (STALLED + b"\x89PNG\r\n\x1a\n", 408, f"the upload did not arrive within {BODY_TIMEOUT:g} s"),
    "headers, then no body": (STALLED, 408, "did not arrive"),
    "form stalls mid-part": (post_head("Content-Type: multipart/form-data; boundary=b", "Content-Length: 9000") + b"--b\r\nContent-Disposition: form-data; "
                             b'name="file"; filename="a.png"\r\n\r\n\x89PNG', 408, "did not arrive"),
    "chunked body stalls": (post_head("Content-Type: image/png", "Transfer-Encoding: chunked") + b"8\r\n\x89PNG\r\n\x1a\n\r\n", 408, "did not arrive"),
    "Content-Length of 20 digits": (post_head("Content-Type: image/png", "Content-Length: 99999999999999999999"), 413, "limit of 1 MB"),
    "negative Content-Length": (post_head("Content-Type: image/png", "Content-Length: -5"), 400, "Invalid HTTP request"),
    "Content-Length not a number": (post_head("Content-Type: image/png", "Content-Length: abc"), 400, "Invalid HTTP request"),
    "bad chunk size": (post_head("Content-Type: image/png", "Transfer-Encoding: chunked") + b"zz\r\nabc\r\n", 400, ""),
    "gzip transfer coding": (post_head("Content-Type: image/png", "Transfer-Encoding: gzip") + b"abc", 400, ""),
    "not HTTP": (b"HELLO THERE\r\n\r\n", 400, "Invalid HTTP request"),
}  # fmt: skip


@pytest.mark.parametrize("case", RAW)
def test_malformed_http(server, case):
    proc, url, port = server
    data, status, fragment = RAW[case]
    got, body, seconds = raw_exchange(port, data)
    message = json.loads(body)["detail"] if body.startswith("{") else body
    check_refusal(got, message, status, fragment)
    if status == 408:
        assert BODY_TIMEOUT - 0.5 < seconds < BODY_TIMEOUT + 5
    assert proc.poll() is None and httpx.get(f"{url}/health").json()["busy"] == 0


# --- valid but unusual: answered -----------------------------------------------------------------


def _chunks():
    data = png_bytes(np.full((20, 30), 90, np.uint8))
    yield from (data[i : i + 100] for i in range(0, len(data), 100))


WORKS = {  # case: (request, height, width)
    "16-bit PNG": (_file("s.png", png_bytes(np.full((20, 30), 40000, np.uint16))), 20, 30),
    "float TIFF": (_file("f.tif", tiff_bytes(np.full((20, 30), 0.4, np.float32)), "image/tiff"), 20, 30),
    "boolean TIFF": (_file("b.tif", tiff_bytes(np.ones((20, 30), bool)), "image/tiff"), 20, 30),
    "one pixel": (_file("one.png", png_bytes(np.array([[7]], np.uint8))), 1, 1),
    "one row of 5000": (_file("row.png", png_bytes(np.zeros((1, 5000), np.uint8))), 1, 5000),
    "JPEG": (_file("j.jpg", jpeg_bytes(np.full((20, 30), 99, np.uint8)), "image/jpeg"), 20, 30),
    "raw body": (_raw(GOOD, "image/png", filename="raw.png"), 30, 40),
    "chunked raw body": ({"content": _chunks, "headers": {"content-type": "image/png"}}, 20, 30),
    "no content type": (_file("a.png", GOOD, ""), 30, 40),
}  # fmt: skip


@pytest.mark.parametrize("case", WORKS)
def test_unusual_but_valid_uploads(server, case):
    _, url, _ = server
    request, height, width = WORKS[case]
    if callable(request.get("content")):
        request = {**request, "content": request["content"]()}
    request = {**request, "params": {**request.get("params", {}), "format": "json"}}
    r = httpx.post(f"{url}/predict", timeout=60, **request)
    assert r.status_code == 200, r.text
    body = r.json()
    log_case(f"HTTP 200: {body['height']} x {body['width']}, {len(body['classes'])} class areas")
    assert (body["height"], body["width"]) == (height, width) and sum(c["pixels"] for c in body["classes"]) == height * width


# --- a hostile run: stalled uploads beside real work, then a burst of bad requests ------------------


def test_stalled_uploads_do_not_starve_the_others_and_nothing_answers_5xx(server):
    proc, url, port = server
    assert httpx.post(f"{url}/predict", files={"file": ("warm.png", GOOD, "image/png")}, timeout=60).status_code == 200  # model warmed up
    stalled: list[tuple[int, str, float]] = []
    clients = [threading.Thread(target=lambda: stalled.append(raw_exchange(port, STALLED + b"\x89PNG"))) for _ in range(2 * (JOBS + QUEUE))]
    for client in clients:  # more stalled uploads than jobs and queue together
        client.start()
    time.sleep(0.5)
    assert httpx.get(f"{url}/health").json()["busy"] == 0  # an upload still arriving holds no slot
    start = time.monotonic()
    r = httpx.post(f"{url}/predict", files={"file": ("a.png", GOOD, "image/png")}, timeout=30)
    assert r.status_code == 200 and time.monotonic() - start < BODY_TIMEOUT and not stalled, "a normal request waited for the stalled ones"
    for client in clients:
        client.join(BODY_TIMEOUT + 10)
    assert sorted(status for status, _, _ in stalled) == [408] * len(clients)
    assert all(seconds < BODY_TIMEOUT + 5 for _, _, seconds in stalled)

    def send(case: str) -> tuple[str, int]:
        return case, httpx.post(f"{url}/predict", timeout=60, **MALFORMED[case][0]).status_code

    with ThreadPoolExecutor(JOBS + QUEUE) as pool:  # as many at once as the server takes, so none is refused as busy (503)
        answers = list(pool.map(send, [*MALFORMED] * 2))
    assert [(case, status) for case, status in answers if status >= 500] == []
    assert [(case, status) for case, status in answers if status != MALFORMED[case][1]] == []
    assert proc.poll() is None
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/health").json()["busy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(f"{url}/health").json()["busy"] == 0
