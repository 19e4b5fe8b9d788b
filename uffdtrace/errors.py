"""The one exception type that reaches the user as a single line."""


class UffdtraceError(Exception):
    """An environment or usage problem: printed as one line, exit status 1."""
