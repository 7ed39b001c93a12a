"""Every error paddle-bundle raises on purpose.

Each class carries the exit code the CLI maps it to, and also inherits the closest stdlib
exception so library callers can catch what they already know (``FileNotFoundError``,
``ValueError``...). ``str(error)`` is the one line a user sees: what went wrong, which file, and
what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Exit codes of the CLI, documented in README.md and docs/cli.md.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3


class BundleError(Exception):
    """Base of every expected failure. ``hint`` says what the user can do next."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class UsageError(BundleError, ValueError):
    """The command line names something malformed (a bad model id, a bad size)."""

    exit_code = EXIT_USAGE


class ModelNotFoundError(BundleError, FileNotFoundError):
    """A model asked for is not in the cache (pack, check) or not installed."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """The bundle file given on the command line does not exist."""


class InstallConflictError(BundleError, FileExistsError):
    """A different version of a model is already installed and ``--force`` was not given."""


class InsufficientSpaceError(BundleError, OSError):
    """The target file system cannot hold what would be written."""


class LockedError(BundleError, BlockingIOError):
    """Another paddle-bundle process is installing into the same home."""


class IntegrityError(BundleError):
    """A bundle, or an installed model, does not match its manifest.

    ``problems`` lists every problem found, not only the first, so one run tells the user the
    whole extent of the damage.
    """

    exit_code = EXIT_INTEGRITY

    def __init__(
        self, message: str, problems: Iterable[str] = (), *, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.problems: tuple[str, ...] = tuple(problems)


class ManifestError(IntegrityError, ValueError):
    """``manifest.json`` is missing, unreadable, or does not follow the schema."""
