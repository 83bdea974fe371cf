"""serve.py's settings, checked before TensorFlow is imported (one line naming the flag)."""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass

from autoencoder.errors import UserError

MEBIBYTE = 1024 * 1024


@dataclass
class ServeConfig:
    path: str  # model folder written by train.py (or its .keras file), or an export written by export.py
    result: str | None = None  # finetuning result name; None: the model's only one
    results_root: str = "results"
    host: str = "127.0.0.1"
    port: int = 8000
    batch_size: int = 16  # images scored by one detector.score + decide call, at most
    max_wait_ms: float = 5.0  # how long the model worker waits for more images once it has one
    max_body_mb: float = 32.0  # a request body larger than this is refused (413)
    max_images: int = 64  # images in one request, at most (413)
    max_pixels: int = 36_000_000  # pixels of one image, at most (from its header, before decoding)
    max_queue: int = 1024  # images waiting for the model, at most; beyond: 503
    workers: int | None = None  # threads decoding uploads (None: one per CPU)
    log_every_s: float = 60.0  # a summary line of the requests this often (errors are logged at once)
    read_timeout_s: float = 15.0  # a request's headers, and each part of its body, within this (protocol.py)
    max_connections: int = 512  # open connections, at most; a new one beyond is closed at once

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MEBIBYTE)

    def validate(self) -> None:
        """Every flag that needs no TensorFlow, then the model or export: its files, the finetuning
        result (-r, --results-dir) or the export's sidecar, as predict.py checks them; ValueError /
        OSError (one line) naming the flag or the file."""
        from pathlib import Path

        from autoencoder import bundle
        from processing.workflow.export_runner import info_path, read_info

        positive_ints = (
            ("-b/--batch", self.batch_size), ("--max-images", self.max_images), ("--max-pixels", self.max_pixels),
            ("--max-queue", self.max_queue), ("--workers", 1 if self.workers is None else self.workers),
            ("--max-connections", self.max_connections),
        )
        for flag, value in positive_ints:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{flag} {value}: expected a positive whole number")
        if self.max_queue < self.batch_size:
            raise UserError(f"--max-queue {self.max_queue}: expected at least -b/--batch ({self.batch_size})")
        for flag, value, low, high in (
            ("--max-wait-ms", self.max_wait_ms, 0.0, 10_000.0),
            ("--max-body-mb", self.max_body_mb, 1e-3, 4096.0),
            ("--log-every", self.log_every_s, 1e-3, 86_400.0),
            ("--read-timeout", self.read_timeout_s, 0.01, 3600.0),
        ):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
                raise UserError(f"{flag} {value}: expected a number from {low:g} to {high:g}")
        descriptors = open_file_limit()
        if descriptors is not None and self.max_connections > descriptors - FILE_RESERVE:
            raise UserError(f"--max-connections {self.max_connections}: this process may open {descriptors} files (ulimit -n), "
                             f"{FILE_RESERVE} of them kept for the model and the log: at most {descriptors - FILE_RESERVE}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise UserError(f"--port {self.port}: expected a port number from 1 to 65535")
        check_address(self.host, self.port)
        path = Path(self.path)
        if info_path(path).is_file():  # an export: its sidecar checked as the runner will read it
            try:
                read_info(info_path(path))
            except ValueError as error:  # the standalone runner's one-line error about the export's files
                raise UserError(str(error)) from None
        elif path.suffix.lower() in (".onnx", ".tflite") or (path / "saved_model.pb").is_file():
            raise UserError(f"-p {path}: an export without its {info_path(path).name}; expected the folder or file export.py wrote")
        else:  # a model folder: the model, its .keras file and the finetuning result, before TensorFlow
            from processing.workflow.predict.run import check_model_and_result

            bundle.resolve_model_path(self.path, "-p/--path")
            check_model_and_result(self.path, self.results_root, self.result)


FILE_RESERVE = 64  # file descriptors kept beside the connections (model, images, log)


def open_file_limit() -> int | None:
    """The soft limit of open files of this process (None where it cannot be read)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def check_address(host: str, port: int) -> None:
    """OSError (one line) unless `host`:`port` can be listened on now (checked before the model is
    loaded; another process may still take it before the server binds)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise OSError(f"--host {host}: not an address of this machine ({error.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            reason = error.strerror or str(error)
            raise OSError(f"--host {host} --port {port}: cannot listen there ({reason[0].lower() + reason[1:]})") from None
