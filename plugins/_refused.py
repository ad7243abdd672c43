"""The base of the families vsp-assert refuses (``idefics2``, ``llama4``): an adapter that only says why.

A refused family is registered like any other, so that ``load_model`` / ``LoadedModel.wrap`` on its checkpoints
stop with the family's reason and the alternative instead of "no adapter supports model_type ...". A subclass sets
``REASON``, ``ALLOWED`` and ``ALTERNATIVE`` and says what of the model's config to show (:meth:`received`).
"""

from __future__ import annotations

from typing import Any

from vsp_assert.errors import ModelError

from .llava import LlavaAdapter


class RefusedAdapter(LlavaAdapter):
    REASON = ""
    ALLOWED = "the supported families (see docs/adapters.md, Support)"
    ALTERNATIVE = ""

    @classmethod
    def received(cls, model: Any) -> str:
        """What the error shows as received: the family and the config value the reason rests on."""
        return cls.family

    def __init__(self, model: Any, processor: Any) -> None:
        raise ModelError(self.REASON, field="model_type", received=self.received(model), allowed=self.ALLOWED,
                         fix=self.ALTERNATIVE)
