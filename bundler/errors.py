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
    """A model asked for is not in the cache (pack, check), not installed, or not on the
    server (fetch)."""


class NetworkError(BundleError, ConnectionError):
    """``fetch`` could not reach the model server, or a download from it broke or was refused.

    Nothing is packed then: a bundle made from a partial download would carry the failure
    across the air gap, where it can no longer be repaired.
    """


class DeltaBaseMissingError(BundleError, FileNotFoundError):
    """A delta bundle relies on installed files that are missing or different here."""

    def __init__(self, message: str, problems: tuple[str, ...] | list[str] = (), *,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems: tuple[str, ...] = tuple(problems)


class BundleNotFoundError(BundleError, FileNotFoundError):
    """The bundle file given on the command line does not exist."""


class InstallConflictError(BundleError, FileExistsError):
    """A different version of a model is already installed and ``--force`` was not given."""


class InsufficientSpaceError(BundleError, OSError):
    """The target file system cannot hold what would be written."""


class PartialInstallError(BundleError, OSError):
    """Some models of a bundle were installed (each whole, with its record) before another
    could not be put in place. ``installed`` and ``missing`` name them by id."""

    def __init__(self, message: str, *, installed: tuple[str, ...], missing: tuple[str, ...],
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.installed = installed
        self.missing = missing


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


# -- offline mode (bundler.offline) -----------------------------------------------------------
class ModelNotInstalledError(ModelNotFoundError):
    """Offline mode was asked for a model by name that is not in the cache.

    An ``OSError`` (through :class:`ModelNotFoundError`), because that is what PaddleNLP's
    callers and its users' code already expect from a failed ``from_pretrained``; it is raised
    where PaddleNLP looks in its cache, before any probe, so its message reaches the user
    instead of PaddleNLP's "Can't load the model" that suggests a network problem.
    """

    def __init__(self, model_id: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.model_id = model_id


class MissingFromBundleError(IntegrityError):
    """A file PaddleNLP needs is known to exist upstream but is not in the installed copy
    (an installed file since deleted, a shard named by the checkpoint index, a built-in
    resource).

    Deliberately *not* an ``OSError``: PaddleNLP's resolver turns every ``OSError`` raised
    while probing into a generic "Can't load the model" and some callers read ``OSError`` as
    "optional file absent"; a missing required file must reach the user by name.
    """


class OfflineBlockedError(BundleError, ConnectionError):
    """Offline mode refused a network access (a DNS lookup, a connect, a download).

    A ``ConnectionError`` so that HTTP clients (urllib3, requests) report it the way they
    report an unreachable host, without waiting for a time-out.
    """


class UnsupportedPaddleNLPError(BundleError, RuntimeError):
    """Offline mode does not know this PaddleNLP version, or its download functions have
    changed, so patching them could silently do nothing. Raised while PaddleNLP is imported."""


# -- fetch -- CMD (bundler.capture) -----------------------------------------------------------
class CommandFailedError(BundleError):
    """The command ``fetch -- CMD`` ran exited non-zero, so no bundle was written.

    Its exit code becomes paddle-bundle's, as a wrapper's should.
    """

    def __init__(self, returncode: int, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.returncode = returncode
        self.exit_code = returncode if 0 < returncode < 256 else EXIT_ERROR


class ProofFailedError(BundleError):
    """The offline proof of a new bundle failed: the program, run again offline from a scratch
    install of the bundle, did not succeed. Nothing was written."""


# -- the fleet mirror (bundler.mirror, PADDLE_BUNDLE_MIRROR) ----------------------------------
class NotOnMirrorError(BundleError):
    """Offline mode with a mirror (``PADDLE_BUNDLE_MIRROR``) needed a file that is neither in
    the local cache nor served by the mirror (or the mirror could not be reached).

    Deliberately not an ``OSError`` (as :class:`MissingFromBundleError`): PaddleNLP's resolver
    turns those into a generic "Can't load the model", and this must reach the user naming the
    mirror.
    """

    def __init__(self, model_id: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.model_id = model_id


# -- supply-chain checks (bundler.signing, bundler.scan) ---------------------------------------
class UnsafeWeightsError(IntegrityError):
    """A weights file is a pickle that names a global outside the allowlist: loading it
    could run code. ``path``, ``global_name`` and ``offset`` say where (the first found)."""

    def __init__(self, message: str, problems: Iterable[str] = (), *, path: str = "",
                 global_name: str | None = None, offset: int = -1,
                 hint: str | None = None) -> None:
        super().__init__(message, problems, hint=hint)
        self.path = path
        self.global_name = global_name
        self.offset = offset


class SignatureError(IntegrityError):
    """A bundle's signature is missing where a trust policy requires one, or does not verify
    against the trusted signers (unknown signer, expired key, wrong namespace, a sidecar
    edited after signing)."""


class UnsafePickleLoadError(BundleError, RuntimeError):
    """Offline mode's load-time guard refused to unpickle a file naming a global outside the
    allowlist (``paddle.load`` of a file that never went through a bundle)."""

    exit_code = EXIT_INTEGRITY


# -- the offline machine's software (bundler.wheels, bundler.doctor) --------------------------
class WheelsUnavailableError(BundleError, LookupError):
    """No wheel exists for the target Python/platform of a package the wheel folder needs
    (``missing`` names the requirement), so no folder was written."""

    def __init__(self, message: str, *, missing: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.missing = missing


#: ``paddle-bundle rewrite``: some files could not be read or parsed (each was reported and
#: skipped; the others were handled).  Kept apart from 1 so that ``rewrite --check`` in CI
#: tells "would change" (1) from "could not look at everything" (4).
EXIT_SKIPPED = 4
