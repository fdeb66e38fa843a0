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
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException  # what Starlette's own parsers raise
    from starlette.requests import ClientDisconnect
except ImportError as e:
    raise UnetkitError(f"unetkit serve needs fastapi, uvicorn and python-multipart ({e.name} is missing): pip install 'unetkit[serve]'") from None

from unetkit.inference.predictor import Segmenter
from unetkit.server.core import FORMATS, InferencePool, RequestError, clean_name, segment

STATIC = Path(__file__).parent / "static"
#: The page loads only its own files; the overlay comes back as a data: URL.
PAGE_POLICY = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'"
SPOOL_BYTES = 2**20  # a raw upload beyond this waits on disk, not in memory, until a worker reads it
log = logging.getLogger("unetkit.serve")


class UploadGuard:
    """ASGI middleware bounding every request body in size and in time.

    413 for a body over ``max_bytes``, declared by ``Content-Length`` or counted as it arrives (chunked bodies);
    408 for a body not complete ``timeout`` seconds after the request's headers arrived, so a client that
    stalls mid-upload (or never sends its body) is cut off. Both answers close the connection.
    """

    def __init__(self, app, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"the upload exceeds this server's limit of {self.max_bytes / 2**20:g} MB; send a smaller file or start the "
                                  "server with a larger --max-upload-mb", headers={"Connection": "close"})  # fmt: skip

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:  # (h11 answers 400 to a Content-Length that is no number)
            too_large = self._too_large()
            return await JSONResponse({"detail": too_large.detail}, 413, too_large.headers)(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        received, complete = 0, False

        async def guarded():
            nonlocal received, complete
            if complete:  # after the body only a disconnect can come: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise HTTPException(408, f"the upload did not arrive within {self.timeout:g} s of the request; send it again, without "
                                         "pausing, on a faster connection", headers={"Connection": "close"}) from None  # fmt: skip
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, guarded, send)


async def _bad_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
    """400 for a bad query parameter: FastAPI's list of errors as one line naming the first, its value and the fix."""
    first = error.errors()[0]
    where, name = (list(map(str, first.get("loc", ()))) + ["request", "?"])[:2]
    value = clean_name(repr(first.get("input")), 60)
    detail = f"{where} parameter {name}={value}: {first.get('msg', 'invalid')}; see GET /health and docs/deploy.md for the parameters"
    return JSONResponse({"detail": detail}, 400)


async def _refused(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """Every refusal as ``{"detail": one line}``; a wrong route or method says which routes there are."""
    detail = error.detail
    if error.status_code in (404, 405):  # Starlette says only "Not Found" / "Method Not Allowed"
        detail = f"{request.method} {clean_name(request.url.path, 100)}: {detail.lower()}; the routes are GET /, GET /health and POST /predict"
    return JSONResponse({"detail": detail}, error.status_code, headers=error.headers)


def _backend(seg: Segmenter) -> str:
    if "ensemble" in seg.meta:  # several models averaged (unetkit.inference.ensemble)
        return f"ensemble of {len(seg.meta['ensemble'])}"
    return "onnxruntime" if seg.model is None else "pytorch"


def create_app(segmenter: Segmenter, limits: Limits | None = None, name: str = "model") -> FastAPI:
    """A FastAPI app that segments uploaded images with ``segmenter``.

    Args:
        segmenter: The model (``unetkit.load(...)``, a checkpoint or an ``.onnx`` file).
        limits: Upload size, pixel count, jobs, queue and body timeout (default :class:`Limits`); a body
            slower than ``limits.body_timeout`` seconds from its headers gets 408 and its connection is closed.
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
    app.add_middleware(UploadGuard, max_bytes=limits.max_upload_bytes, timeout=limits.body_timeout)
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

    app.add_exception_handler(RequestValidationError, _bad_parameter)
    app.add_exception_handler(StarletteHTTPException, _refused)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"})

    @app.get("/health")
    def health() -> dict:
        return {**info, "busy": pool.admitted}

    @app.post("/predict")
    async def predict(request: Request, format: str = "png", overlay: bool = False) -> Response:
        if format not in FORMATS:
            raise HTTPException(400, f"format={clean_name(format, 60)!r} is not one of {', '.join(FORMATS)}")
        upload = None
        try:
            upload, filename, content_type = await _receive(request)
            pool.admit()  # only now: a slow upload holds no slot, so it cannot starve the others
            future = pool.run(_job, segmenter, upload, filename, content_type, limits, format, overlay)
            upload = None  # the job closes it
            media, body = await asyncio.wrap_future(future)
        except RequestError as e:
            raise HTTPException(e.status, e.message, headers={"Retry-After": "2"} if e.status == 503 else None) from None
        except ClientDisconnect:
            raise HTTPException(400, "the upload was interrupted") from None
        except StarletteHTTPException:  # 408 and 413 from UploadGuard
            raise
        except Exception as e:  # a bug or an exhausted resource: answer it, log it, keep serving
            log.exception("predict failed")
            raise HTTPException(500, f"internal error while segmenting ({type(e).__name__}: {e}); see the server log") from None
        finally:
            if upload is not None:
                upload.close()
        if media == "application/json":
            return JSONResponse(body)
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).stem) or "upload"  # a header must stay ASCII and unquoted
        return Response(body, media_type=media, headers={"Content-Disposition": f'inline; filename="{stem}_{format}.png"'})

    return app


async def _form(request: Request):
    """The multipart form, its parser's complaints (400) worded as one line with the fix."""
    try:
        return await request.form(max_files=1, max_fields=8)
    except StarletteHTTPException as e:
        if e.status_code != 400:  # 408 and 413 from UploadGuard
            raise
        if "Too many files" in str(e.detail):
            raise RequestError(400, "the form holds more than one file; send one image as the multipart field 'file'") from None
        raise RequestError(400, f"malformed multipart form ({clean_name(str(e.detail))}); send the image as the multipart field 'file' "
                                "(curl -F file=@image.png)") from None  # fmt: skip


async def _receive(request: Request):
    """The upload as (file object, file name, declared content type): a multipart field ``file`` or the raw body."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await _form(request)
        field = form.get("file")
        if field is None or isinstance(field, str):
            await form.close()
            raise RequestError(422, "no file in the form; send the image as the multipart field 'file' (curl -F file=@image.png)")
        return field.file, clean_name(field.filename or "upload"), field.content_type or ""
    spool = tempfile.SpooledTemporaryFile(SPOOL_BYTES)
    try:
        async for chunk in request.stream():
            spool.write(chunk)
    except BaseException:  # over the size limit, out of time, or the client went away
        spool.close()
        raise
    return spool, clean_name(request.query_params.get("filename", "upload")), kind


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
