"""``python3 -m flatcar_airflow.buildcache_server``: the cache container's entry point (no Airflow needed)."""

import sys

from .cli import main

sys.exit(main())
