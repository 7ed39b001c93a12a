"""paddle-bundle: carry PaddleNLP models across an air gap.

The library never prints; the CLI in :mod:`bundler.cli` is the only place that talks to a
terminal. Importing this package imports nothing from Paddle.
"""

from __future__ import annotations

__version__ = "0.1.0"
