"""The pytest plugin: entry point (:mod:`.entry`, registered as ``pytest11``), options (:mod:`.options`), the one
per-session object (:mod:`.session`), YAML collection (:mod:`.collect`) and report hooks (:mod:`.reporting`).

It wires the checks and the renderers into pytest; it owns no analysis of its own.
"""
