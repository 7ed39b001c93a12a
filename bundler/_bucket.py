"""PaddleNLP's bucket on BOS, ``paddlenlp``: the two spellings of its fixed URLs.

Built-in names' resources (``https://bj.bcebos.com/paddlenlp/models/...``, path style) and
Taskflow's static files (``https://paddlenlp.bj.bcebos.com/taskflow/...``, host style) are files
of one bucket, as are community models (below ``models/community/``): a mirror serves the
bucket's paths below its own URL. Standard library only, and nothing else: offline mode and the
capture hook import it at interpreter start.
"""

from __future__ import annotations

#: The bucket's URL prefixes, over https and http.
BUCKET_PREFIXES = ("https://bj.bcebos.com/paddlenlp/", "http://bj.bcebos.com/paddlenlp/",
                   "https://paddlenlp.bj.bcebos.com/", "http://paddlenlp.bj.bcebos.com/")


def bucket_rel(url: str) -> str | None:
    """The path of ``url`` below the bucket (its query dropped), or None when ``url`` is not
    a file URL of the bucket."""
    for prefix in BUCKET_PREFIXES:
        if url.startswith(prefix):
            return url[len(prefix):].split("?", 1)[0]
    return None
