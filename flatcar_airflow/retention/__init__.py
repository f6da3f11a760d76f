"""Build cache retention: the orchestrator's policy (:mod:`.policy`), the cache listings it reports from
(:mod:`.listing`), and one collection run through the scripts' own ``garbage_collect`` (:mod:`.collector`).
See docs/retention.md."""
