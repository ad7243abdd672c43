"""The checks: what a case expects, and whether a trace meets it.

The case schema and the YAML loader (:mod:`.schema`), the assertion checks that turn a trace into
:class:`~.assertions.AssertionRecord` s (:mod:`.assertions`), the fluent ``trace.assert_*`` spelling
(:mod:`.fluent`), baselines and drift as data (:mod:`.baseline`) and the comparison of two checkpoints
(:mod:`.compare`). The checks read the engine; they never print (rendering is :mod:`vsp_assert.render`).
"""
