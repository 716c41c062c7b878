"""Errors the job reports to its user as one line, without a stack trace."""


class WalsRobertaError(Exception):
    """Base class: the message is complete and is shown to the user as is."""


class ConfigError(WalsRobertaError):
    """A config key is unknown, missing or has a value outside what is allowed."""


class InputDataError(WalsRobertaError):
    """The input data cannot be used: missing path or column, empty, invalid values."""


class RunStateError(WalsRobertaError):
    """A stage needs a table that an earlier stage has not written for this run."""
