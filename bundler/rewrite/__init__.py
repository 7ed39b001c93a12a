"""Point ``*.from_pretrained("org/model")`` calls at installed model folders.

Why this exists: on an air-gapped machine
``AutoModel.from_pretrained("Salesforce/codegen-350M-mono")`` starts with a network lookup
that can only fail or hang.  Handing PaddleNLP the installed folder's absolute path instead
makes it read straight from disk.  The scripts and notebooks being edited belong to the
user, so only the id argument of a PaddleNLP call changes; anything that cannot be
rewritten safely is reported, never guessed at.

The package is laid out along the data flow:

* :mod:`.codemod` -- the libcst transform, pure ``str -> str`` (:func:`rewrite_source`);
* :mod:`.notebooks` -- the same over an ``.ipynb``'s code cells, splicing the result back
  so the notebook stays byte-stable (:func:`rewrite_notebook`);
* :mod:`.files` -- walking folders, decoding, planning over all cores, ``--diff`` and the
  atomic write (:func:`iter_sources`, :func:`plan_rewrites`, :func:`unified_diff`,
  :func:`apply`);
* :mod:`.results` -- the values they hand each other (:class:`Change`, :class:`Finding`,
  :class:`RewriteResult`).

Nothing here prints; the CLI decides how to show changes and findings.
"""

from __future__ import annotations

from bundler.rewrite.codemod import OFFLINE_IMPORT_LINE, render_string_literal, rewrite_source
from bundler.rewrite.files import (
    SKIP_DIRS,
    FileChangedError,
    FileRewrite,
    apply,
    default_jobs,
    iter_sources,
    plan_rewrites,
    unified_diff,
)
from bundler.rewrite.notebooks import rewrite_notebook
from bundler.rewrite.results import SKIPPED_KINDS, Change, Finding, FindingKind, RewriteResult

__all__ = [
    "OFFLINE_IMPORT_LINE",
    "SKIPPED_KINDS",
    "SKIP_DIRS",
    "Change",
    "FileChangedError",
    "FileRewrite",
    "Finding",
    "FindingKind",
    "RewriteResult",
    "apply",
    "default_jobs",
    "iter_sources",
    "plan_rewrites",
    "render_string_literal",
    "rewrite_notebook",
    "rewrite_source",
    "unified_diff",
]
