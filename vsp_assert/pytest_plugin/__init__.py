"""The pytest plugin: entry point (:mod:`.entry`, registered as ``pytest11``), options (:mod:`.options`), the one
per-session object (:mod:`.session`), YAML collection (:mod:`.collect`), report hooks (:mod:`.reporting`) and the
plain-data case digests the reports carry, from which the summary and the HTML report are built (:mod:`.digest`;
the same in one process and under pytest-xdist).

It wires the checks and the renderers into pytest; it owns no analysis of its own.
"""
