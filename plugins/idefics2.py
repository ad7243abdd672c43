"""Idefics2 family adapter (``model_type == "idefics2"``): a refusal, with the reason and the alternatives.

Idefics2's connector is a *perceiver resampler*: ``resampler_n_latents`` (64) learned latent queries cross-attend,
``resampler_depth`` times, to *all* the patches of an image (and to themselves), and those 64 latents — not the
patches — become the LM's image tokens. Every image token is an input-dependent, nonlinear mix of every patch, so no
image token carries a patch (or a fixed set of patches) of its own: the token ↔ patch map that ``A[t, p]``
(attention of output token ``t`` to patch ``p``) and ``s[t, k] = Σ_p A[t, p]·f[p, k]`` rest on does not exist. A
map read off the resampler's cross-attention would be a heuristic (it ignores the values, the MLPs and the latents'
self-attention) that no wiring check could confirm, so vsp-assert refuses the family instead of recording a number
that is not what the model attends to.

Alternatives: inspect the LM's attention over the 64 resampled image tokens (token-level, not patch-level) with
eager ``output_attentions=True``; or use an Idefics3 / SmolVLM checkpoint (``model_type`` ``idefics3`` /
``smolvlm``, the successors that replaced the resampler with a pixel shuffle), where every image token carries its
own patches and the full Scratchpad works.

Registered so that ``load_model`` / ``LoadedModel.wrap`` on an Idefics2 checkpoint stop with this reason rather
than with "no adapter supports model_type 'idefics2'".
"""

from __future__ import annotations

from typing import Any

from ._refused import RefusedAdapter

REASON = ("idefics2: its perceiver resampler turns every image's patches into resampler_n_latents learned latent "
          "tokens by cross-attention, so no LM image token carries a patch of its own and the attention of an "
          "output token to a patch, A[t, p], is undefined")
ALTERNATIVE = ("inspect the LM's attention over the resampled image tokens with eager output_attentions=True, or use "
               "an Idefics3 / SmolVLM checkpoint (pixel-shuffle connector: tokens map to patches)")


class Idefics2Adapter(RefusedAdapter):
    family = "idefics2"
    model_types = ("idefics2",)
    model_class = "Idefics2ForConditionalGeneration"
    REASON, ALTERNATIVE = REASON, ALTERNATIVE
    ALLOWED = "families whose image tokens map to patches (see docs/adapters.md, Support)"

    @classmethod
    def received(cls, model: Any) -> str:
        latents = getattr(getattr(model.config, "perceiver_config", None), "resampler_n_latents", None)
        return f"idefics2 (resampler_n_latents={latents})"
