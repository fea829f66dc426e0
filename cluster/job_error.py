"""The one error every cluster-job check raises: one line that names the option."""

from __future__ import annotations


class JobError(ValueError):
    """A job option is wrong; the message is one line and names the option."""

    def __init__(self, message: str) -> None:
        # Values quoted back to the user may hold newlines; the message may not.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))
