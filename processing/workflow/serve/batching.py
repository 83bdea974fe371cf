"""Dynamic batching: one worker thread owns the model and scores the images of concurrent requests
together.

Requests put their decoded images on one queue, each image with its own ``Future``. The worker
takes the first image waiting, then more until it holds ``max_batch`` images or ``max_wait_s`` has
passed since it took the first one (Triton's "max queue delay"), runs ``run_batch`` once on the
stacked batch and resolves every image's future with its part of the result. A request's images
may thus be split over batches, and one batch may serve several requests. Only this thread calls
``run_batch``, so the model and the detector are never used by two threads at once.

Backpressure: ``submit`` refuses (:class:`QueueFull`) when more than ``max_queue`` images would be
waiting; the HTTP layer answers 503. ``close`` stops the worker after the batch in flight and fails
the images still waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from autoencoder.errors import UserError
from processing.data.tiles import batch_of

logger = logging.getLogger(__name__)

_STOP = object()


class QueueFull(RuntimeError):
    """More images are waiting for the model than the queue may hold."""


@dataclass
class _Job:
    image: np.ndarray
    future: Future = field(default_factory=Future)


class Batcher:
    """The model worker; see the module docstring.

    run_batch: (N, ...) stacked images -> a sequence of N per-image results (called by the worker
    thread only). Raising fails the futures of that batch with the exception.
    """

    def __init__(self, run_batch: Callable[[np.ndarray], Sequence], max_batch: int, max_wait_s: float, max_queue: int,
                 name: str = "model-worker"):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise UserError(f"batcher: max_batch {max_batch}, max_queue {max_queue} >= 1 and max_wait_s {max_wait_s} >= 0 expected")
        self.run_batch, self.max_batch, self.max_wait_s, self.max_queue = run_batch, max_batch, max_wait_s, max_queue
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._sizes: Counter = Counter()  # batch size -> batches run
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, images: Sequence[np.ndarray]) -> list[Future]:
        """One future per image, resolved with its part of ``run_batch``'s result."""
        jobs = [_Job(image) for image in images]
        with self._lock:
            if self._closed:
                raise RuntimeError("the model worker has stopped (the service is shutting down)")
            if self._queue.qsize() + len(jobs) > self.max_queue:
                raise QueueFull(f"{self._queue.qsize()} images are waiting for the model (at most {self.max_queue}): retry later")
            for job in jobs:
                self._queue.put(job)
        return [job.future for job in jobs]

    def stats(self) -> dict:
        """Batches run so far: how many, the images in them, the largest, the mean size, the waiting images."""
        with self._lock:
            sizes = dict(sorted(self._sizes.items()))
        batches = sum(sizes.values())
        images = sum(size * count for size, count in sizes.items())
        return {
            "batches": batches,
            "images": images,
            "largest_batch": max(sizes, default=0),
            "mean_batch": round(images / batches, 3) if batches else None,
            "batch_sizes": {str(size): count for size, count in sizes.items()},
            "waiting": self._queue.qsize(),
        }

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop after the batch in flight; the images still waiting fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout_s)
        stopped = RuntimeError("the model worker has stopped (the service is shutting down)")
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Job) and not job.future.done():
                job.future.set_exception(stopped)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs, stop = self._collect(first)
            self._run(jobs)
            if stop:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` and the images that arrive within max_wait_s of it, up to max_batch; (jobs, stop seen)."""
        jobs = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(jobs) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _run(self, jobs: list[_Job]) -> None:
        try:
            results = self.run_batch(batch_of([job.image for job in jobs]))
            if len(results) != len(jobs):
                raise RuntimeError(f"the model returned {len(results)} results for a batch of {len(jobs)} images")
        except Exception as error:  # the batch's requests fail (500); the worker goes on
            logger.exception("scoring a batch of %d images failed", len(jobs))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        with self._lock:
            self._sizes[len(jobs)] += 1
        for job, result in zip(jobs, results):
            if not job.future.done():
                job.future.set_result(result)
