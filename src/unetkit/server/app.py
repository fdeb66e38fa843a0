"""The HTTP layer: a FastAPI app around a Segmenter, and ``run_server`` to run it with uvicorn.

Routes:
    ``GET /``: the web page (``static/``, nothing fetched from elsewhere).
    ``GET /health``: model, classes and limits as JSON.
    ``POST /predict?format=png|json|overlay[&overlay=true]``: the image as a multipart field ``file``,
    or as the raw request body with an image content type.
"""

import asyncio
import contextlib
import logging
import re
import socket
import tempfile
from pathlib import Path

from unetkit.commands import Limits
from unetkit.errors import UnetkitError
from unetkit.version import __version__

try:
    import python_multipart  # noqa: F401 - parses the uploads; Starlette imports it only when a form arrives
    import uvicorn
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.requests import ClientDisconnect
except ImportError as e:
    raise UnetkitError(f"unetkit serve needs fastapi, uvicorn and python-multipart ({e.name} is missing): pip install 'unetkit[serve]'") from None

from unetkit.inference.predictor import Segmenter
from unetkit.server.core import FORMATS, InferencePool, RequestError, segment

STATIC = Path(__file__).parent / "static"
#: The page loads only its own files; the overlay comes back as a data: URL.
PAGE_POLICY = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'"
SPOOL_BYTES = 2**20  # a raw upload beyond this waits on disk, not in memory, until a worker reads it
log = logging.getLogger("unetkit.serve")


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, declared or counted as it arrives."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> str:
        return f"the upload exceeds this server's limit of {self.max_bytes / 2**20:g} MB; send a smaller file or start the server with a larger --max-upload-mb"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await JSONResponse({"detail": self._too_large()}, status_code=413, headers={"Connection": "close"})(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # chunked bodies have no length to check up front
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, counted, send)


def _backend(seg: Segmenter) -> str:
    return "onnxruntime" if seg.model is None else "pytorch"


def create_app(segmenter: Segmenter, limits: Limits | None = None, name: str = "model") -> FastAPI:
    """A FastAPI app that segments uploaded images with ``segmenter``.

    Args:
        segmenter: The model (``unetkit.load(...)``, a checkpoint or an ``.onnx`` file).
        limits: Upload size, pixel count, jobs and queue (default :class:`Limits`).
        name: The model's name shown by ``/health`` and the page.

    Example:
        >>> app = create_app(unetkit.load("model.onnx"), Limits(jobs=2))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    limits = limits or Limits()
    pool = InferencePool(limits.jobs, limits.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        pool.shutdown()

    app = FastAPI(title="unetkit", summary="U-Net segmentation of uploaded images", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    info = {
        "status": "ok",
        "model": name,
        "backend": _backend(segmenter),
        "classes": segmenter.classes,
        "colors": [list(c) for c in segmenter.colors],
        "in_channels": segmenter.config.in_channels,
        "tile": segmenter.options.tile,
        "limits": limits.to_dict(),
        "unetkit_version": __version__,
    }

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"})

    @app.get("/health")
    def health() -> dict:
        return {**info, "busy": pool.admitted}

    @app.post("/predict")
    async def predict(request: Request, format: str = "png", overlay: bool = False) -> Response:
        if format not in FORMATS:
            raise HTTPException(400, f"format={format!r} is not one of {', '.join(FORMATS)}")
        try:
            pool.admit()
        except RequestError as e:
            raise HTTPException(e.status, e.message, headers={"Retry-After": "2"}) from None
        running = False
        try:
            upload, filename, content_type = await _receive(request)
            future = pool.run(_job, segmenter, upload, filename, content_type, limits, format, overlay)
            running = True
            media, body = await asyncio.wrap_future(future)
        except RequestError as e:
            raise HTTPException(e.status, e.message) from None
        except ClientDisconnect:
            raise HTTPException(400, "the upload was interrupted") from None
        except HTTPException:
            raise
        except Exception as e:  # a bug or an exhausted resource: answer it, log it, keep serving
            log.exception("predict failed")
            raise HTTPException(500, f"internal error while segmenting ({type(e).__name__}: {e}); see the server log") from None
        finally:
            if not running:
                pool.release()
        if media == "application/json":
            return JSONResponse(body)
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).stem) or "upload"  # a header must stay ASCII and unquoted
        return Response(body, media_type=media, headers={"Content-Disposition": f'inline; filename="{stem}_{format}.png"'})

    return app


async def _receive(request: Request):
    """The upload as (file object, file name, declared content type): a multipart field ``file`` or the raw body."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        field = form.get("file")
        if field is None or isinstance(field, str):
            raise RequestError(422, "no file in the form; send the image as the multipart field 'file' (curl -F file=@image.png)")
        return field.file, field.filename or "upload", field.content_type or ""
    spool = tempfile.SpooledTemporaryFile(SPOOL_BYTES)
    try:
        async for chunk in request.stream():
            spool.write(chunk)
    except BaseException:  # over the size limit, or the client went away
        spool.close()
        raise
    return spool, request.query_params.get("filename", "upload"), kind


def _job(segmenter: Segmenter, upload, filename: str, content_type: str, limits: Limits, fmt: str, overlay: bool):
    """One request's work on a pool thread: read the spooled upload, then :func:`segment`."""
    with upload:
        upload.seek(0)
        data = upload.read()
    return segment(segmenter, data, filename, content_type, limits, fmt, overlay)


def run_server(segmenter: Segmenter, limits: Limits, host: str = "127.0.0.1", port: int = 8000, name: str = "model") -> None:
    """Serve ``segmenter`` over HTTP with uvicorn until interrupted (Ctrl-C or SIGTERM)."""
    if not 1 <= port <= 65535:
        raise UnetkitError(f"--port {port} is not a port number (1..65535)")
    try:  # fail with a clear message now rather than from inside uvicorn
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as e:
        raise UnetkitError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port or --host") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"unetkit serve: listening on {host}, reachable from other machines; the server has no authentication")
    print(f"unetkit serve: {name} ({_backend(segmenter)}, classes {', '.join(segmenter.classes)}) on http://{host}:{port}/ "
          f"(max {limits.max_upload_mb:g} MB, {limits.max_pixels:,} pixels, {limits.jobs} job(s) at once); Ctrl-C stops it", flush=True)  # fmt: skip
    uvicorn.run(create_app(segmenter, limits, name), host=host, port=port, log_level="info", timeout_keep_alive=5)
