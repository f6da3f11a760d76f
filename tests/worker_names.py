"""``[core] hostname_callable`` for tests that run several Airflow workers on one machine.

Every worker process is started with ``AIRFLOW__CORE__HOSTNAME_CALLABLE=worker_names.hostname`` (this
directory on its ``PYTHONPATH``) and its own ``FLATCAR_TEST_WORKER``: task instances then record which
worker ran them in their ``hostname``.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("FLATCAR_TEST_WORKER") or socket.getfqdn()
