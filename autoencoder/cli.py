"""What the command-line scripts share: logging set-up, quiet TensorFlow, one-line errors.

A script parses and checks its flags first (nothing here imports TensorFlow), then calls
:func:`import_tensorflow`, which imports TensorFlow and, unless ``-v``, hides the noise its C++
side prints on stderr for the rest of the run (absl's "All log messages before
absl::InitializeLog() ...", the oneDNN notice, the grappler remapper's lines during training; only
the logs are hidden, oneDNN itself stays on, so the numbers are unchanged).
"""

from __future__ import annotations

import atexit
import errno
import io
import logging
import os
import re
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable

from autoencoder.errors import UserError

# Must be set before TensorFlow is imported anywhere. Level 2 hides TensorFlow's C++ INFO and
# WARNING logs (errors still show); it does not reach the lines absl prints before it is set up.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

logger = logging.getLogger("autoencoder")

# What TensorFlow's C++ side prints on stderr on every run, whatever it is asked to do: at start-up
# (absl, oneDNN, CPU features, CUDA probes) and while it optimises training graphs (the grappler
# remapper's "failed" lines, which change nothing in the result).
STARTUP_NOISE = [
    re.compile(r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(r"oneDNN custom operations are on"),
    re.compile(r"This TensorFlow binary is optimized to use available CPU instructions"),
    re.compile(r"^To enable the following instructions: .* rebuild TensorFlow"),
    re.compile(r"Unable to register cu(DNN|FFT|BLAS) factory"),
    re.compile(r"computation placer already registered"),
    re.compile(r"TF-TRT Warning: Could not find TensorRT"),
    re.compile(r"Could not find cuda drivers on your machine"),
    re.compile(r"failed call to cuInit"),
    re.compile(r"meta_optimizer\.cc:\d+\] remapper failed"),
]
# What the image decoders print on stderr for a corrupt or truncated file, which predict.py already
# reports as a row with its error (and the other scripts as a one-line error): OpenCV's log lines,
# libpng's and libjpeg's messages.
DECODER_NOISE = [
    re.compile(r"^\[ ?(ERROR|WARN|INFO):\d+@[\d.]+\] global \S+\.cpp:\d+ "),
    re.compile(r"^libpng (error|warning): "),
    re.compile(r"^(Premature end of JPEG file|Corrupt JPEG data: |Invalid SOS parameters|Not a JPEG file: |Bogus marker length)"),
    re.compile(r"^> (Internal imread issue|    ')"),
]
# The start of a line that may still turn out to be noise (held until its end is known):
# absl/glog lines ("I0000 00:00:...", "E0000 ..."), absl's first notice, the CPU-instructions line.
_NOISE_PREFIXES = (b"WARNING: All log messages", b"To enable the following", b"[ WARN:", b"[ERROR:", b"libpng ", b"Premature end",
                   b"Corrupt JPEG")
_GLOG_PREFIX = re.compile(rb"^[IWEF]\d{0,4}( |$)")


def add_verbose_flag(parser) -> None:
    """-v/--verbose, which every script has (debug logging, TensorFlow's start-up lines shown)."""
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_moved_data_dir_flag(parser) -> None:
    """--data-dir of the scripts that read a trained model's dataset (finetune.py, test.py, add_good.py)."""
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="the dataset's folder when it moved since training (checked to "
                        "hold the same files, byte for byte, as info.json records)")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("matplotlib", "PIL", "h5py", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def is_startup_noise(line: str) -> bool:
    """Whether a line on fd 2 is TensorFlow's noise or an image decoder's (both hidden unless -v)."""
    return any(pattern.search(line) for pattern in STARTUP_NOISE) or any(pattern.search(line) for pattern in DECODER_NOISE)


def _may_be_noise(partial: bytes) -> bool:
    return bool(_GLOG_PREFIX.match(partial)) or any(p.startswith(partial) or partial.startswith(p) for p in _NOISE_PREFIXES)


class StderrFilter:
    """File descriptor 2 through a pipe, with a thread that forwards everything but TensorFlow's
    noise (STARTUP_NOISE) to the real stderr.

    TensorFlow's C++ code writes to file descriptor 2 directly, at import and later (a second copy
    of the oneDNN notice, the remapper lines during training), before and beyond any Python
    setting. Lines are forwarded as they come; a partial line is held only while it may still
    become a noise line. Python's own stderr (sys.stderr, the log handlers writing to it, progress
    bars) is pointed at the real stderr directly, so its order with stdout stays as written. At
    exit the descriptor is restored and the rest forwarded.
    """

    def __init__(self):
        sys.stderr.flush()
        self.original = os.dup(2)
        direct = io.TextIOWrapper(io.FileIO(self.original, "w", closefd=False), encoding=sys.stderr.encoding,
                                  errors="backslashreplace", line_buffering=True, write_through=True)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.read = read
        self.thread = threading.Thread(target=self._forward, name="stderr-filter", daemon=True)
        self.thread.start()
        atexit.register(self.close)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(direct)
        sys.stderr = direct

    def _emit(self, data: bytes) -> None:
        while data:
            data = data[os.write(self.original, data):]

    def _forward(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not is_startup_noise(line.decode(errors="replace")))
            if pending and not _may_be_noise(pending):
                out, pending = out + pending, b""
            if out:
                self._emit(out)
        if pending and not is_startup_noise(pending.decode(errors="replace")):
            self._emit(pending)
        os.close(self.read)

    def close(self) -> None:
        """Restore file descriptor 2 and forward what is left in the pipe."""
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.original, 2)  # closes the pipe's last write end: the thread sees the end of it
        self.thread.join(timeout=5)
        sys.stderr = sys.__stderr__


_filter: StderrFilter | None = None


def filter_native_stderr() -> None:
    """Hide TensorFlow's C++ noise on stderr from now on (once per process). Not done where
    sys.stderr has been replaced (pytest's capture, a notebook): fd 2 is not this process's console there."""
    global _filter
    if _filter is None and sys.stderr is sys.__stderr__ and sys.stderr is not None:
        try:
            if sys.stderr.fileno() != 2:
                return
        except (OSError, ValueError, AttributeError):
            return
        _filter = StderrFilter()


def import_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and Keras; without `verbose`, hide the noise its C++ side prints on stderr
    (at import and later: :class:`StderrFilter`). Only the logs are hidden: oneDNN itself stays on,
    so the numbers are unchanged. Python warnings and TensorFlow's Python logger stay as they are,
    except the tf.function retracing notice, which says nothing a user can act on."""
    if not verbose:
        filter_native_stderr()
        tf_logger = logging.getLogger("tensorflow")
        if not any(isinstance(f, _RetracingFilter) for f in tf_logger.filters):
            tf_logger.addFilter(_RetracingFilter())
    if "tensorflow" in sys.modules:
        import keras  # noqa: F401

        return
    if verbose or _filter is not None:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

        return
    # stderr is not the console (replaced, or not fd 2): catch what the import prints, replay the rest.
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read().decode(errors="replace")
            kept = [line for line in text.splitlines() if line.strip() and not is_startup_noise(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


class _RetracingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def error_line(error: BaseException) -> str:
    """One line saying what went wrong; for an OSError, the path and the reason without the errno."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        if error.errno == errno.ENOTDIR:
            reason = "a part of that path is a file, not a folder"
        elif error.errno in (errno.EACCES, errno.EPERM):
            reason = "permission denied"
        elif error.errno == errno.ENOSPC:
            reason = "no space left on the device"
        else:
            reason = error.strerror[0].lower() + error.strerror[1:]
        target = f" -> {error.filename2}" if error.filename2 is not None else ""
        return f"{error.filename}{target}: {reason}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run a script's main. What the user can fix (a UserError: a flag, a file, an image; an OSError:
    a path, a permission, a full disk) ends with a one-line error and exit code 2; anything else is
    a bug, reported as one "internal error" line (with its traceback under -v) and exit code 1."""
    try:
        main(argv)
    except (UserError, OSError) as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001  (the last resort: report it, then exit)
        verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"internal error: {type(error).__name__}: {error_line(error)}"
              + ("" if verbose else " (a bug, not your input: rerun with -v for the traceback and report it)"), file=sys.stderr)
        return 1
    return 0
