"""What the start-up hook runs in every Python of a captured command.

:func:`activate` is cheap (no PaddleNLP import): it creates this process's recorder and puts
an import finder in front of ``sys.meta_path`` that patches PaddleNLP's download modules
right after each has run (offline mode's :class:`bundler._offline.PatchOnImport`, with the
recorder's table), after offline mode's version and shape checks. Modules already imported
are patched at once.
"""

from __future__ import annotations

import os
import sys

from bundler.capture import ENV_CAPTURE

_ACTIVE = False


def activate() -> None:
    """Switch the recorder on in this process if :data:`ENV_CAPTURE` names a folder."""
    global _ACTIVE
    folder = os.environ.get(ENV_CAPTURE)
    if _ACTIVE or not folder:
        return
    _ACTIVE = True
    from bundler._offline import PatchOnImport
    from bundler.capture.recorder import ENV_MIRROR, Recorder, patches

    home = os.environ.get("PPNLP_HOME") or os.path.join(os.path.expanduser("~"), ".paddlenlp")
    rec = Recorder(home, report_dir=folder, mirror=os.environ.get(ENV_MIRROR))
    table = patches(rec)
    sys.meta_path.insert(0, PatchOnImport(table))
    for name, patch in table.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module)
