"""The fleet mirror: installed bundles served by nginx to machines with no paddle-bundle.

``publish`` verifies bundles as install does and lays their files out where PaddleNLP requests
them (:mod:`bundler.mirror.layout`), in immutable generations flipped with one rename
(:mod:`bundler.mirror.tree`); ``nginx`` prints the server configuration
(:mod:`bundler.mirror.nginx`). docs/fleet.md is the administrator's guide.
"""

from __future__ import annotations

from bundler.mirror.nginx import server_config
from bundler.mirror.publish import PublishResult, prune, publish, remove
from bundler.mirror.tree import Index, Mirror, PublishedModel

__all__ = ["Index", "Mirror", "PublishResult", "PublishedModel", "prune", "publish",
           "remove", "server_config"]
