"""The user-facing error types: a bad input, a training stopped on request, and failed training workers."""


class UnetkitError(Exception):
    """A problem with the user's input or configuration.

    The message is one line that names the offending file or option and says how to fix it.
    The CLI prints it without a traceback and exits with status 2.
    """


class TrainingInterrupted(UnetkitError):
    """Training stopped on Ctrl-C or SIGTERM after saving its state; the message says how to resume."""


class WorkersFailed(UnetkitError):
    """The workers of ``train(nproc=N)`` ended with an error.

    Attributes:
        exit_code: Status for the command: 2 for a bad input, 130 for an interruption, 1 for a crash.
        line: What the command prints, or None when rank 0 printed it already.
    """

    def __init__(self, message: str, exit_code: int, line: str | None) -> None:
        super().__init__(message)
        self.exit_code, self.line = exit_code, line
