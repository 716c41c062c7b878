"""Errors the job reports to its user as one line, without a stack trace."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for
    one-line errors that wrap a library's multi-line ones."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class WalsRobertaError(Exception):
    """Base class: the message is complete and is shown to the user as is."""


class ConfigError(WalsRobertaError):
    """A config key is unknown, missing or has a value outside what is allowed."""


class InputDataError(WalsRobertaError):
    """The input data cannot be used: missing path or column, empty, invalid values."""


class RunStateError(WalsRobertaError):
    """A stage needs a table that an earlier stage has not written for this run."""


class LeaseHeldError(RunStateError):
    """Another run holds the output root's lease (it publishes or prunes there now)."""


class StorageError(WalsRobertaError):
    """A path cannot be created, written or read: what was done, the cause in words, and
    the config key the path came from once it is known (the command line fills it in)."""

    def __init__(self, path: str, action: str, cause: str, key: str | None = None) -> None:
        super().__init__(path, action, cause)
        self.path, self.action, self.cause, self.key = path, action, cause, key

    def __str__(self) -> str:
        prefix = f"{self.key}: " if self.key else ""
        return f"{prefix}cannot {self.action} {self.path}: {self.cause}"
