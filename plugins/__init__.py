"""Built-in adapters, one module per VLM family (installed as ``vsp_assert.plugins``).

Each module defines one :class:`vsp_assert.adapters.Adapter` subclass and registers it. ``BUILTIN`` lists the
modules imported when an adapter is first looked up; third-party adapters come in through the
``vsp_assert.adapters`` entry-point group instead.
"""

BUILTIN: tuple[str, ...] = (
    "llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "paligemma", "idefics3", "gemma3", "llava_onevision",
)
