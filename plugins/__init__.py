"""Built-in adapters, one module per VLM family (installed as ``vsp_assert.plugins``).

Each module defines one :class:`vsp_assert.engine.adapter.Adapter` subclass. They are registered the one way any
adapter is: through the ``vsp_assert.adapters`` entry-point group (this package's pyproject.toml lists them).
"""
