"""The one user-facing error type.

Anything a user can fix (bad path, unknown method, unreachable Hub) raises `DistillError` with the
problem and the fix; the CLI prints it as one line and exits with code 2, with no traceback.
"""


class DistillError(Exception):
    """A problem the user can fix, stated together with the fix."""

    exit_code = 2

    def __init__(self, problem: str, fix: str):
        super().__init__(problem, fix)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem} — fix: {self.fix}"


def describe(exc: BaseException) -> str:
    """An exception as one line, its type and the first line of its message ('ValueError: bad k')."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
