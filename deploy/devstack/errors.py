"""One-line, actionable launcher failures (printed without a stack trace)."""


class LauncherError(RuntimeError):
    """A start-up problem the user can fix; `str()` says how."""
