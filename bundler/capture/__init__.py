"""Capture: record every file PaddleNLP obtains for a command, in every Python it starts.

``paddle-bundle fetch -- CMD`` runs the user's command unchanged with the recorder switched on
the way offline mode is switched on: an environment variable (:data:`ENV_CAPTURE`, naming the
folder where each recording process writes its report) plus a start-up hook. The hook is a
``sitecustomize.py`` in a temporary folder put first on ``PYTHONPATH`` (see
:func:`bundler.capture.session.write_hook`), so it reaches every Python the command starts,
whether or not paddle-bundle is installed in it, and it chains to the ``sitecustomize`` it
shadows.

* :mod:`bundler.capture.recorder`: the wrappers around PaddleNLP's download helpers;
* :mod:`bundler.capture.hook`: what the start-up hook runs in each process;
* :mod:`bundler.capture.session`: the parent side: environment, running, merging reports;
* :mod:`bundler.capture.prove`: the offline proof of a new bundle in a scratch home.
"""

from __future__ import annotations

#: Set to a folder: every Python started with it records what PaddleNLP obtains and writes
#: its report to ``<folder>/<pid>-<random>.json``.
ENV_CAPTURE = "PADDLE_BUNDLE_CAPTURE"
