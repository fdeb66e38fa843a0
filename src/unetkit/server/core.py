"""The server's work without HTTP: limits, upload checks, the bounded inference pool, and the responses.

Everything here raises :class:`RequestError` (an HTTP status and a one-line message) for bad input,
so the web layer (:mod:`unetkit.server.app`) only translates; nothing here imports FastAPI.
"""

from __future__ import annotations

import base64
import io
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from unetkit.data.io import probe_image, read_image
from unetkit.commands import Limits
from unetkit.errors import UnetkitError
from unetkit.inference.predictor import Segmenter, probabilities_to_mask
from unetkit.instances import model_target, object_table, probabilities_to_instances
from unetkit.report import overlay as draw_overlay

#: Declared content types an upload may have; the bytes decide the actual format.
ACCEPTED_TYPES = frozenset({"image/png", "image/jpeg", "image/tiff", "image/bmp", "image/x-ms-bmp", "application/octet-stream", ""})
#: Leading bytes of the formats unetkit reads, and the file suffix that makes read_image decode them.
SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"II+\x00", ".tif"),  # BigTIFF
    (b"MM\x00+", ".tif"),
    (b"BM", ".bmp"),
)
FORMATS = ("png", "json", "overlay")


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx, or 503 when busy) and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def sniff(data: bytes) -> str | None:
    """The file suffix of an image's bytes (``.png``, ``.jpg``, ``.tif``, ``.bmp``), or None."""
    return next((suffix for magic, suffix in SIGNATURES if data.startswith(magic)), None)


def decode_upload(data: bytes, filename: str, content_type: str, limits: Limits) -> np.ndarray:
    """Check an uploaded file and decode it as ``(H, W, C)`` in its native dtype, like ``read_image``.

    Checks, in order: the declared content type (415), that the bytes are a PNG, JPEG, TIFF or BMP
    (415), the pixel count from the header before decoding (413), then the decode itself (422 for a
    truncated or corrupt file).

    Raises:
        RequestError: With the status above and a message naming ``filename``.
    """
    kind = content_type.split(";")[0].strip().lower()
    if kind not in ACCEPTED_TYPES:
        raise RequestError(415, f"{filename}: content type {kind!r} is not an image; send a PNG, JPEG, TIFF or BMP file")
    if not data:
        raise RequestError(422, f"{filename}: the file is empty")
    suffix = sniff(data)
    if suffix is None:
        raise RequestError(415, f"{filename}: not a PNG, JPEG, TIFF or BMP file (it starts with {data[:8]!r})")
    with tempfile.TemporaryDirectory(prefix="unetkit-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)

        def named(error: UnetkitError) -> str:
            return str(error).replace(str(path), filename)

        try:
            h, w = probe_image(path)
        except UnetkitError as e:
            raise RequestError(413 if "more pixels" in str(e) else 422, named(e)) from None
        if h * w > limits.max_pixels:
            raise RequestError(413, f"{filename}: {h} x {w} = {h * w:,} pixels exceeds this server's limit of {limits.max_pixels:,}; "
                                    "send a smaller image or start the server with a larger --max-pixels")  # fmt: skip
        try:
            return read_image(path)
        except UnetkitError as e:
            raise RequestError(422, named(e)) from None


def class_areas(mask: np.ndarray, classes: list[str], colors: list[tuple[int, int, int]]) -> list[dict]:
    """Per class: index, name, colour, pixel count and share of the image.

    Example:
        >>> class_areas(np.array([[0, 1, 1, 1]]), ["bg", "cell"], [(0, 0, 0), (255, 0, 0)])[1]
        {'index': 1, 'name': 'cell', 'color': [255, 0, 0], 'pixels': 3, 'fraction': 0.75}
    """
    counts = np.bincount(mask.ravel(), minlength=len(classes))
    return [
        {"index": i, "name": name, "color": list(colors[i]), "pixels": int(counts[i]), "fraction": float(counts[i] / mask.size)}
        for i, name in enumerate(classes)
    ]


def png_bytes(array: np.ndarray) -> bytes:
    """``(H, W)`` uint8/uint16 or ``(H, W, 3)`` uint8 as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _instances(seg: Segmenter, probs: np.ndarray) -> dict | None:
    """Objects of models that give them (``target="instances"``, or binary foreground components)."""
    try:
        target = model_target(seg.meta)
    except UnetkitError:  # a multi-class semantic model: which class would be the objects?
        return None
    labels, foreground = probabilities_to_instances(probs, target)
    objects = object_table(labels, foreground)
    return {"count": len(objects), "method": "watershed" if target == "instances" else "components", "objects": objects}


def segment(seg: Segmenter, data: bytes, filename: str, content_type: str, limits: Limits, fmt: str, overlay: bool) -> tuple[str, bytes | dict]:
    """Decode one upload, segment it and build the response body.

    Args:
        fmt: ``"png"`` (the class-index mask), ``"overlay"`` (class colours over the image, PNG) or
            ``"json"`` (image size, per-class areas, instances when the model gives them).
        overlay: With ``"json"``, also include the overlay and the mask as base64 PNGs (``overlay_png``,
            ``mask_png``), as the web page uses them.

    Returns:
        ``(media type, body)``: PNG bytes, or a JSON-able dict.
    """
    start = time.perf_counter()
    image = decode_upload(data, filename, content_type, limits)
    try:
        seg.check_image(image, filename)
    except UnetkitError as e:
        raise RequestError(422, str(e)) from None
    probs = seg.predict_proba(image)  # (K, H, W)
    mask = probabilities_to_mask(probs)  # (H, W)
    if fmt == "png":
        return "image/png", png_bytes(mask)
    if fmt == "overlay":
        return "image/png", png_bytes(draw_overlay(image, mask, seg.colors, seg.classes))
    body = {
        "file": filename,
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "channels": int(image.shape[2]),
        "classes": class_areas(mask, seg.classes, seg.colors),
    }
    instances = _instances(seg, probs)
    if instances is not None:
        body["instances"] = instances
    if overlay:  # what the web page shows and offers to download
        body["overlay_png"] = base64.b64encode(png_bytes(draw_overlay(image, mask, seg.colors, seg.classes))).decode("ascii")
        body["mask_png"] = base64.b64encode(png_bytes(mask)).decode("ascii")
    body["seconds"] = round(time.perf_counter() - start, 3)
    return "application/json", body


class InferencePool:
    """At most ``jobs`` jobs run at once and at most ``max_queue`` more wait; the rest are refused.

    A request takes a slot with :meth:`admit` before its body is read, so a flood of requests is
    answered 503 at once rather than buffered: memory stays bounded by (jobs + max_queue) uploads
    plus ``jobs`` images in flight.
    """

    def __init__(self, jobs: int, max_queue: int) -> None:
        self.capacity = jobs + max_queue
        self._executor = ThreadPoolExecutor(jobs, thread_name_prefix="unetkit-serve")
        self._lock = threading.Lock()
        self.admitted = 0  # requests holding a slot: running, waiting, or still uploading

    def admit(self) -> None:
        """Take a slot for a request; :meth:`run` gives it back when its job ends, :meth:`release` if it never runs.

        Raises:
            RequestError: 503 when every slot is taken.
        """
        with self._lock:
            if self.admitted >= self.capacity:
                raise RequestError(503, f"the server is busy ({self.admitted} requests running or queued); retry in a few seconds")
            self.admitted += 1

    def release(self) -> None:
        with self._lock:
            self.admitted -= 1

    def run(self, fn: Callable, *args) -> Future:
        """Run ``fn(*args)`` on a worker for an admitted request; its slot is released when the job ends,
        even if the client has gone away meanwhile, so abandoned jobs still count against the bound."""
        future = self._executor.submit(fn, *args)
        future.add_done_callback(lambda _: self.release())
        return future

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
