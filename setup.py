"""Build step for the one thing pyproject.toml cannot declare: the offline start-up hook.

``PADDLE_BUNDLE_OFFLINE=1`` must switch offline mode on in any Python that has paddle-bundle
installed, with no change to the user's code. Python runs the ``import`` lines of every
``*.pth`` file in site-packages at start-up (``site.addpackage`` ``exec``s a line that starts
with ``import``), so the package installs ``paddle_bundle_offline.pth`` there: one line that
costs a dictionary look-up when the variable is unset and imports :mod:`bundler.offline` when
it is set.

A ``.pth`` file is not part of any Python package, so setuptools has to be told to put it at
the root of site-packages, in both ways the project is installed:

* a wheel (``pip install .``, ``pip install paddle-bundle``): ``build_py`` also writes the file
  at the root of ``build_lib``, and everything there lands in site-packages;
* an editable install (``pip install -e .``, what ``make setup`` does): setuptools (>= 64)
  builds a PEP 660 wheel from a temporary ``build_lib`` it throws away, but runs ``build_py``
  with ``editable_mode`` set and points the ``install`` command's ``install_lib`` at the root of
  that wheel, so the file is written there too.

Everything else is in pyproject.toml; this file only adds the command class.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "paddle_bundle_offline.pth"  # sorts after setuptools' "__editable__.*.pth"
PTH_LINE = (
    'import os; os.environ.get("PADDLE_BUNDLE_OFFLINE", "").strip().lower() not in '
    '("", "0", "false", "no", "off") and __import__("bundler.offline")\n'
)


class BuildPyWithOfflineHook(build_py):
    """``build_py`` that also writes :data:`PTH_NAME` where it will reach site-packages."""

    def run(self) -> None:
        super().run()
        self._write_hook(self.build_lib)
        if getattr(self, "editable_mode", False):
            install = self.get_finalized_command("install")
            self._write_hook(install.install_lib)

    def _write_hook(self, folder: str | None) -> None:
        if not folder:
            return
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, PTH_NAME), "w", encoding="utf-8") as fh:
            fh.write(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH_NAME))
        return outputs


setup(cmdclass={"build_py": BuildPyWithOfflineHook})
