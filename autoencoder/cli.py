"""What the command-line scripts share: logging set-up, quiet TensorFlow, one-line errors.

A script parses and checks its flags first (nothing here imports TensorFlow), then calls
:func:`import_tensorflow`, which imports TensorFlow with its start-up noise hidden (absl's
"All log messages before absl::InitializeLog() ..." and the oneDNN notice; only the logs are
hidden, oneDNN itself stays on, so the numbers are unchanged), unless ``-v``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import tempfile
from typing import Callable

# Must be set before TensorFlow is imported anywhere. Level 2 hides TensorFlow's C++ INFO and
# WARNING logs (errors still show); it does not reach the lines absl prints before it is set up.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

logger = logging.getLogger("autoencoder")

# What TensorFlow prints on stderr while it is imported, on every run, whatever it is asked to do.
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
]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("matplotlib", "PIL", "h5py", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def is_startup_noise(line: str) -> bool:
    return any(pattern.search(line) for pattern in STARTUP_NOISE)


def import_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and Keras; without `verbose`, drop the start-up lines they print on stderr.

    Those lines come from C++ before any Python setting applies, so stderr (file descriptor 2) is
    caught in a temporary file during the import and replayed without them: anything else printed
    meanwhile (a warning, an error) still shows.
    """
    if verbose or "tensorflow" in sys.modules:
        import keras  # noqa: F401

        return
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
    """Run a script's main; bad input (ValueError, OSError) ends with a one-line error and exit code 2."""
    try:
        main(argv)
    except (ValueError, OSError) as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
