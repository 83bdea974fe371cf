"""The one base class of the errors a user can fix: a wrong flag, a missing file, a bad image.

The scripts (autoencoder/cli.py) print a UserError as one line and exit 2; anything else is a bug
of ours or of a library, printed with its traceback under ``-v`` and as one line that says so
without. UserError derives from ValueError, so callers that caught ValueError still do.
"""

from __future__ import annotations


class UserError(ValueError):
    """Input, flags, files or settings the user can correct; the message says what was expected."""
