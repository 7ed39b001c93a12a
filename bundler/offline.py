"""Offline mode: PaddleNLP loads models by name from the local cache, with no network at all.

Importing this module switches it on for the whole process::

    import bundler.offline  # paddle-bundle: load models from the local cache, no network
    from paddlenlp.transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("Salesforce/codegen-350M-mono")

The same happens at interpreter start when ``PADDLE_BUNDLE_OFFLINE=1`` is set (a start-up hook
installed with the package imports this module), and for every Python that
``paddle-bundle run -- CMD`` starts. The import costs a few milliseconds: PaddleNLP itself is
patched when it is imported, not imported here.

Why and how, the rules for missing files, and the versions covered: :mod:`bundler._offline`
and docs/offline.md.
"""

from __future__ import annotations

from bundler._offline import (
    ENV_ANY_VERSION,
    ENV_GUARD,
    ENV_OFFLINE,
    SUPPORTED_PADDLENLP,
    activate,
    blocked_attempts,
    is_active,
    is_guarded,
    run_environment,
)

__all__ = [
    "ENV_ANY_VERSION",
    "ENV_GUARD",
    "ENV_OFFLINE",
    "SUPPORTED_PADDLENLP",
    "activate",
    "blocked_attempts",
    "is_active",
    "is_guarded",
    "run_environment",
]

activate()
