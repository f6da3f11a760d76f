"""The build cache as a service of the project: sshd + rsync writes, nginx HTTPS reads (docs/buildcache.md).

Used by the quickstart, the compose stack's ``buildcache`` container, an operator's dedicated cache host
(``flatcar-airflow buildcache …``) and the tests. Standard library only.
"""

from __future__ import annotations

from .server import BuildCacheServer, ServerError, Settings

__all__ = ["BuildCacheServer", "ServerError", "Settings"]
