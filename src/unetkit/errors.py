"""The one user-facing error type."""


class UnetkitError(Exception):
    """A problem with the user's input or configuration.

    The message is one line that names the offending file or option and says how to fix it.
    The CLI prints it without a traceback and exits with status 2.
    """
