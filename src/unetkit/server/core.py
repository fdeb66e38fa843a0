"""The server's work without HTTP: limits, upload checks, the bounded inference pool, and the responses.

Everything here raises :class:`RequestError` (an HTTP status and a one-line message) for bad input,
so the web layer (:mod:`unetkit.server.app`) only translates; nothing here imports FastAPI.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from unetkit.data.io import MAX_BANDS, probe_image, read_image, sniff_bytes
from unetkit.commands import Limits
from unetkit.errors import UnetkitError
from unetkit.inference.predictor import Segmenter, probabilities_to_mask
from unetkit.inference.tta import uncertainty_map
from unetkit.instances import model_target, object_table, probabilities_to_instances
from unetkit.report import overlay as draw_overlay, overlay_colors

#: Declared content types an upload may have; the bytes decide the actual format.
ACCEPTED_TYPES = frozenset({"image/png", "image/jpeg", "image/tiff", "image/bmp", "image/x-ms-bmp", "application/octet-stream", ""})
FORMATS = ("png", "json", "overlay")
MAX_PAGES = 1024  # pages of one upload; counting a TIFF's pages reads each header
log = logging.getLogger("unetkit.serve")


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx, or 503 when busy) and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def header_pixels(path: Path) -> tuple[int, int, tuple[int, int]]:
    """(pages or frames, pixels in all of them, (rows, columns) of the first) of an image file, from its headers
    alone: nothing is decoded.

    Every page of a TIFF counts (a multi-page file decodes as bands, or in series), and every frame of an
    animated PNG or a multi-picture JPEG; counting stops after :data:`MAX_PAGES` pages.

    Raises:
        UnetkitError: A page without pixels, or with more bands than an image may have.
        Exception: What the format's reader raises for a malformed header.
    """
    if path.suffix != ".tif":
        with Image.open(path) as image:
            frames = max(int(getattr(image, "n_frames", 1)), 1)
            columns, rows = image.size
            return frames, frames * rows * columns, (rows, columns)
    pages = total = 0
    first = (0, 0)
    with tifffile.TiffFile(path) as tiff:
        for page in tiff.pages:  # parses each IFD; no pixel data is read
            pages += 1
            rows, columns = page.imagelength * page.imagedepth, page.imagewidth
            if rows * columns == 0:
                raise UnetkitError(f"page {pages} has no pixels ({rows} x {columns}); send an image with at least one row and column")
            if page.samplesperpixel > MAX_BANDS:
                raise UnetkitError(f"page {pages} has {page.samplesperpixel} samples per pixel; an image has at most {MAX_BANDS} bands")
            first = first if pages > 1 else (rows, columns)
            total += rows * columns
            if pages > MAX_PAGES:
                return pages, total, first
        series = tiff.series[0]  # what read_image decodes: ImageJ stacks may claim more than their pages
        claimed = math.prod(n for n, axis in zip(series.shape, series.axes) if axis != "S")
    return pages, max(total, claimed), first


def _pixel_check(path: Path, filename: str, limits: Limits) -> None:
    """413 for an upload with more pixels than ``limits`` allow (or too many pages), 422 for an unreadable header."""
    try:
        pages, pixels, (rows, columns) = header_pixels(path)
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"{filename}: the file claims more pixels than a PNG/JPEG reader should decode ({e}); send a smaller image") from None
    except UnetkitError as e:
        raise RequestError(422, f"{filename}: {e}") from None
    except Exception as e:  # any reader's failure on a malformed header: the upload's fault, not the server's
        raise RequestError(422, f"{filename}: cannot read image ({_reason(e, path, filename)}); re-export it as PNG or TIFF") from None
    fix = "send a smaller image or start the server with a larger --max-pixels"
    if pages > MAX_PAGES:
        raise RequestError(413, f"{filename}: more than {MAX_PAGES} pages; send one image per request")
    if pixels > limits.max_pixels and pages > 1:
        raise RequestError(413, f"{filename}: {pages} pages or frames with {pixels:,} pixels in all exceed this server's limit of {limits.max_pixels:,}; {fix}")
    if pixels > limits.max_pixels:
        raise RequestError(413, f"{filename}: {rows} x {columns} = {pixels:,} pixels exceeds this server's limit of {limits.max_pixels:,}; {fix}")


def _reason(error: BaseException, path: Path, filename: str) -> str:
    """The first line of an exception's message (its type when empty), naming the upload as the client did."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return clean_name(text.replace(str(path), filename))


def clean_name(text: str, limit: int = 200) -> str:
    """``text`` fit for a one-line message: control characters replaced by ``?``, at most ``limit`` characters."""
    text = "".join("?" if ord(c) < 32 or ord(c) == 127 else c for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_upload(data: bytes, filename: str, content_type: str, limits: Limits) -> np.ndarray:
    """Check an uploaded file and decode it as ``(H, W, C)`` in its native dtype, like ``read_image``.

    Checks, in order: the declared content type (415), that the bytes are a PNG, JPEG, TIFF or BMP
    (415), the pixel count of all its pages or frames from the headers before decoding (413; 422 for a page
    without pixels), then the decode itself (422 for a truncated or corrupt file, whatever the reader raises).

    Raises:
        RequestError: With the status above and a message naming ``filename``.
    """
    kind = content_type.split(";")[0].strip().lower()
    if kind not in ACCEPTED_TYPES:
        raise RequestError(415, f"{filename}: content type {clean_name(kind)!r} is not an image; send a PNG, JPEG, TIFF or BMP file")
    if not data:
        raise RequestError(422, f"{filename}: the file is empty")
    suffix = sniff_bytes(data)
    if suffix is None:
        raise RequestError(415, f"{filename}: not a PNG, JPEG, TIFF or BMP file (it starts with {data[:8]!r})")
    with tempfile.TemporaryDirectory(prefix="unetkit-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)

        def named(error: UnetkitError) -> str:
            return str(error).replace(str(path), filename)

        _pixel_check(path, filename, limits)
        try:
            probe_image(path)
            image = read_image(path)
        except UnetkitError as e:
            raise RequestError(413 if "more pixels" in str(e) else 422, named(e)) from None
        except Exception as e:  # a decoder's failure on hostile bytes: the upload's fault, not the server's
            log.warning("%s: cannot decode the upload (%s: %s)", filename, type(e).__name__, _reason(e, path, filename))
            raise RequestError(422, f"{filename}: cannot read image ({_reason(e, path, filename)}); re-export it as PNG or TIFF") from None
    return image


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
            ``"json"`` (image size, per-class areas, the mean uncertainty (normalised entropy, 0..1, see
            :func:`~unetkit.inference.tta.uncertainty_map`), instances when the model gives them).
        overlay: With ``"json"``, also include the overlay and the mask as base64 PNGs (``overlay_png``,
            ``mask_png``), as the web page uses them.

    Returns:
        ``(media type, body)``: PNG bytes, or a JSON-able dict.
    """
    start = time.perf_counter()
    image = decode_upload(data, filename, content_type, limits)
    try:  # a refused image, or logits that overflow on it
        probs = seg.predict_proba(image, filename)  # (K, H, W)
    except UnetkitError as e:
        raise RequestError(422, str(e)) from None
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
        "classes": class_areas(mask, seg.classes, overlay_colors(seg.colors)),
        "uncertainty": round(float(uncertainty_map(probs).mean()), 6),  # mean normalised entropy: 0 = certain, 1 = uniform
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

    A request takes a slot with :meth:`admit` once its body has arrived, so clients that upload slowly (or
    stall) hold none and cannot starve the others; the web layer bounds each upload in size and time and
    spools it to disk. Decoded images stay bounded by ``jobs`` in flight, spooled uploads by
    ``jobs + max_queue`` waiting plus those still arriving.
    """

    def __init__(self, jobs: int, max_queue: int) -> None:
        self.capacity = jobs + max_queue
        self._executor = ThreadPoolExecutor(jobs, thread_name_prefix="unetkit-serve")
        self._lock = threading.Lock()
        self.admitted = 0  # requests holding a slot: running or waiting for a worker

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
        try:
            future = self._executor.submit(fn, *args)
        except RuntimeError:  # shut down: the server is stopping
            self.release()
            raise RequestError(503, "the server is shutting down; retry in a few seconds") from None
        future.add_done_callback(lambda _: self.release())
        return future

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
