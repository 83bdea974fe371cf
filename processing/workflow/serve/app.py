"""The HTTP layer of serve.py (FastAPI): endpoints, request limits, the log.

It knows a backend only by its interface (backends.py), so a second backend needs no change here.
The request is read and checked here (content type, size, number of images, names, query flags);
decoding and scoring happen in the backend, called in a worker thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from autoencoder.cli import error_line
from processing.data.images import image_format
from processing.workflow.serve.backends import Backend, Busy
from processing.workflow.serve.config import MEBIBYTE, ServeConfig
from processing.workflow.serve.uploads import safe_name

logger = logging.getLogger(__name__)

FILES_FIELD = "files"
MAX_FORM_FIELDS = 8  # text fields python-multipart parses at most (400 beyond); every text field is then refused (422)
LATENCY_WINDOW = 100_000  # latencies kept for one summary line's percentiles
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_images: int
    log_every_s: float = 60.0

    @classmethod
    def of(cls, config: ServeConfig) -> Limits:
        return cls(config.max_body_bytes, config.max_images, config.log_every_s)


class RequestStats:
    """Counts of the /predict requests since the last summary line (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self.since, self.requests, self.images, self.failed_images, self.errors = now, 0, 0, 0, 0
        self.latencies: deque = deque(maxlen=LATENCY_WINDOW)

    def record(self, images: int, failed: int, seconds: float) -> None:
        with self._lock:
            self.requests += 1
            self.images += images
            self.failed_images += failed
            self.latencies.append(seconds)

    def record_error(self) -> None:
        with self._lock:
            self.errors += 1

    def summary_line(self) -> str | None:
        """The line for the time since the last one (None when nothing happened); starts a new window."""
        now = time.monotonic()
        with self._lock:
            requests, images, failed, errors, latencies, since = (
                self.requests, self.images, self.failed_images, self.errors, list(self.latencies), self.since
            )
            self._reset(now)
        if not requests and not errors:
            return None
        seconds = max(now - since, 1e-9)
        text = f"last {seconds:.0f} s: {requests} requests, {images} images ({images / seconds:.1f}/s), {failed} unreadable, "
        text += f"{errors} refused"
        if latencies:
            p50, p99 = np.percentile(np.asarray(latencies) * 1000.0, [50, 99])
            text += f"; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        return text


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 before it is read entirely. A
    declared Content-Length over the limit is refused before any of the body is read; a chunked
    body is counted as it arrives and refused at the first chunk past the limit."""

    def __init__(self, app, max_bytes: int, stats: RequestStats):
        self.app, self.max_bytes, self.stats = app, max_bytes, stats

    def too_large(self) -> HTTPException:
        limit = f"{self.max_bytes / MEBIBYTE:g} MiB"
        return HTTPException(413, f"request body over the limit of {limit} (--max-body-mb)", headers={"Connection": "close"})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        refusal = None
        if declared is not None:
            if not declared.strip().isdigit():
                refusal = HTTPException(400, "Content-Length: not a number of bytes", headers={"Connection": "close"})
            elif int(declared) > self.max_bytes:
                refusal = self.too_large()
        if refusal is not None:
            self.stats.record_error()
            logger.warning("%s %s: %d %s", scope.get("method"), shown_path(scope.get("path")), refusal.status_code, refusal.detail)
            response = JSONResponse({"detail": refusal.detail}, refusal.status_code, headers=refusal.headers)
            return await response(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self.too_large()  # raised inside the endpoint: answered by the HTTPException handler
            return message

        await self.app(scope, counted, send)


def shown_path(path: str | None) -> str:
    """A request path for the log: a decoded %0a must not start a line of its own."""
    return safe_name(path)[:120]


def flag_of(request: Request, key: str) -> bool:
    value = request.query_params.get(key, "").strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise HTTPException(422, f"{key}={safe_name(value)[:40]}: expected true or false")


async def multipart_uploads(request: Request, max_images: int) -> list[tuple[str, bytes]]:
    """The files of a multipart body, in order, whatever their field's name (`files`, `file`,
    `image`, ...: what clients send first); 413 beyond `max_images`; a text field is refused (the
    usual slip: `curl -F file=x.png` without the @ sends the name, not the file)."""
    try:
        form = await request.form(max_files=max_images, max_fields=MAX_FORM_FIELDS)
    except HTTPException as error:
        if error.status_code == 400 and str(error.detail).startswith("Too many files"):
            raise HTTPException(413, f"more than {max_images} images in one request (--max-images)") from None
        raise
    except ClientDisconnect:
        raise
    except Exception as error:  # what python-multipart may raise on a malformed body
        raise HTTPException(400, f"malformed multipart body: {error_line(error)}") from None
    try:
        uploads = []
        for key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                raise HTTPException(422, f"field {safe_name(key)[:40]!r} holds text, not a file: send the images as files "
                                         f"(curl -F {FILES_FIELD}=@image.png)")
            uploads.append((safe_name(value.filename), await value.read()))
    finally:
        await form.close()
    if not uploads:
        raise HTTPException(422, f"no image: send one or more files in a multipart field such as {FILES_FIELD!r}")
    return uploads


async def read_uploads(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image of a /predict request: multipart/form-data (files in any field,
    `files` repeatable), or one image as the raw body (its name: ?name=): an image/* content type,
    or bytes whose signature is an image's whatever the content type says (`curl --data-binary`
    sends application/x-www-form-urlencoded)."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return await multipart_uploads(request, limits.max_images)
    body = await request.body()
    if media.startswith("image/") or image_format(body) is not None:
        return [(safe_name(request.query_params.get("name")), body)]
    shown = safe_name(content_type)[:60] if content_type else "none"
    raise HTTPException(415, f"Content-Type {shown} and a body that is no PNG, JPEG, BMP or TIFF: send multipart/form-data "
                             f"(field {FILES_FIELD!r}) or one image as the body")


async def log_summaries(stats: RequestStats, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        line = stats.summary_line()
        if line:
            logger.info("%s", line)


def create_app(backend: Backend, limits: Limits, on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    """The service over `backend`; `on_shutdown` runs when the server stops (serve() closes the
    backend there: uvicorn re-raises SIGTERM/SIGINT once it has shut down, so code after it never runs)."""
    stats = RequestStats()

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(log_summaries(stats, limits.log_every_s))
        try:
            yield
        finally:
            task.cancel()
            line = stats.summary_line()
            if line:
                logger.info("%s", line)
            if on_shutdown is not None:
                on_shutdown()

    app = FastAPI(title="anomaly detection", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, stats=stats)

    @app.exception_handler(HTTPException)
    async def refused(request: Request, error: HTTPException):
        stats.record_error()
        level = logging.ERROR if error.status_code >= 500 else logging.WARNING
        logger.log(level, "%s %s: %d %s", request.method, shown_path(request.url.path), error.status_code, error.detail)
        return JSONResponse({"detail": error.detail}, error.status_code, headers=error.headers)

    @app.get("/health")
    async def health():
        status = backend.status()
        ready = bool(status.get("ready"))
        return JSONResponse({"status": "ok" if ready else "unavailable", **status}, 200 if ready else 503)

    @app.get("/model")
    async def model():
        return JSONResponse({**backend.describe(), "limits": asdict(limits)})

    @app.post("/predict")
    async def predict(request: Request):
        started = time.perf_counter()
        masks = flag_of(request, "mask")
        try:
            uploads = await read_uploads(request, limits)
        except ClientDisconnect:  # the client left mid-body (or was closed by --read-timeout): nobody to answer
            stats.record_error()
            logger.info("POST /predict: the client disconnected before sending its whole body")
            return Response(status_code=400)
        try:
            items = await run_in_threadpool(backend.predict, uploads, masks)
        except Busy as error:
            raise HTTPException(503, str(error), headers={"Retry-After": "1"}) from None
        except Exception as error:
            logger.exception("POST /predict: scoring %d images failed", len(uploads))
            raise HTTPException(500, f"scoring failed: {error_line(error)}") from None
        failed = [item for item in items if item["error"]]
        for item in failed:
            logger.warning("POST /predict: %s", item["error"])
        stats.record(len(items), len(failed), time.perf_counter() - started)
        if len(failed) == len(items):
            detail = items[0]["error"] if len(items) == 1 else f"none of the {len(items)} images could be read; first: {items[0]['error']}"
            return JSONResponse({"detail": detail, "results": items}, 422)
        return JSONResponse({"results": items})

    return app
