"""Llama 4 family adapter (``model_type == "llama4"``): a refusal, with the reason, while nothing can verify it.

Llama 4 has everything the Scratchpad needs in principle — tiles (row-major) plus a global view as views, a CLS
appended last and dropped before the model's ``pixel_shuffle`` (½: 2×2 patches → 1 ``<|patch|>`` token) — but
two things stand between it and a verified adapter:

- **Chunked attention.** Most of its LM layers attend within chunks of ``attention_chunk_size`` tokens, the others
  globally. An adapter must either capture exactly what each chunked layer attends to (its chunked mask, not the
  causal one) or refuse; "exactly" is checked against eager ``output_attentions`` by the family suite.
- **Nothing runs.** In the installed transformers, ``Llama4ForConditionalGeneration.forward`` reads
  ``outputs.image_outputs`` from the text model's ``MoeCausalLMOutputWithPast``, which has no such field, so every
  forward with ``return_dict`` (generation included) raises ``AttributeError`` before it returns
  (``tests/plugins/test_llama4.py`` checks this; when a transformers release fixes it, that test fails and says
  to write the adapter). Its only image processor also needs torchvision.

With no forward to compare captured attention, maps and ablations against, vsp-assert refuses the family with this
reason rather than recording attention it cannot show to be the model's. Registered so that ``load_model`` /
``LoadedModel.wrap`` stop here rather than with "no adapter supports model_type 'llama4'".
"""

from __future__ import annotations

from typing import Any

from ._refused import RefusedAdapter

REASON = ("llama4: its chunked-attention LM layers must be captured exactly or not at all, and nothing can verify a "
          "capture: the installed transformers' Llama4ForConditionalGeneration.forward raises AttributeError "
          "(outputs.image_outputs) on every call")
ALTERNATIVE = ("inspect the LM's attention with eager output_attentions=True on a transformers release whose Llama 4 "
               "forward runs, or test a supported family (see docs/adapters.md, Support)")


class Llama4Adapter(RefusedAdapter):
    family = "llama4"
    model_types = ("llama4",)
    model_class = "Llama4ForConditionalGeneration"
    REASON, ALTERNATIVE = REASON, ALTERNATIVE
    ALLOWED = "families whose forward runs and whose attention the family suite verifies"

    @classmethod
    def received(cls, model: Any) -> str:
        chunk = getattr(getattr(model.config, "text_config", None), "attention_chunk_size", None)
        return f"llama4 (attention_chunk_size={chunk})"
