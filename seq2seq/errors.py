"""User-facing errors.

Anything a user can cause (a wrong config key, a missing file, a corrupt checkpoint) raises a
:class:`Seq2SeqError` with a one-line message; the CLI prints it as ``error: ...`` and exits 2.
Everything else is a bug and keeps its traceback.
"""


class Seq2SeqError(Exception):
    """An error caused by the user's input, reported as one line."""


class ConfigError(Seq2SeqError):
    """An invalid configuration: the message starts with the key's dotted path."""


class DataError(Seq2SeqError):
    """Missing or malformed data."""


class CheckpointError(Seq2SeqError):
    """A missing, truncated or incompatible checkpoint or run directory."""


class TrainingError(Seq2SeqError):
    """Training cannot go on (the loss stays non-finite)."""


def one_line(e: object, limit: int = 300) -> str:
    """An exception's message (or any text a message quotes) folded onto one line, at most
    ``limit`` characters ("..." marks a cut)."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Interrupted(Exception):
    """Training stopped on a signal after saving a resumable checkpoint; the message (one line)
    says where and how to continue. Not a user error: the CLI exits with ``128 + signal``."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
