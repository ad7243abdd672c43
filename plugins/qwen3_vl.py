"""Qwen3-VL family adapter (``model_type`` ``"qwen3_vl"``, ``"qwen3_vl_moe"``): Qwen2-VL's packing plus DeepStack.

What holds from :mod:`vsp_assert.plugins.qwen2_vl`: the processor (``Qwen2VLImageProcessor``) resizes to multiples
of ``patch_size · merge_size`` and packs every image's patches in merge order ``(t, h/2, w/2, 2, 2)`` into one
``[Σ h·w, d]`` sequence (no window reordering, as in Qwen2-VL); the merger turns each 2×2 group into one LM image
token, so image token ``g`` carries its four patches with weight 1/4; M-RoPE positions come from ``input_ids``,
``mm_token_type_ids`` and ``image_grid_thw``. ``vision_config.hidden_size`` is the vision width
(``out_hidden_size`` the merger's output). The MoE variant differs only in its LM's MLPs (per-token routing).

**DeepStack: which layers the LM reads.** The LM reads the vision tower in two ways:

1. the *main path*: the last block's output → ``merger`` → the image tokens' input embeddings (as Qwen2-VL);
2. the *DeepStack taps*: the outputs of the blocks listed in ``vision_config.deepstack_visual_indexes`` (8, 16, 24
   of 27 in the released checkpoints) each go through their own merger (``deepstack_merger_list[i]``, the same 2×2
   grouping) and are *added* to the LM's hidden states at the image tokens after LM decoder layer ``i``.

So every block reaches the LM, and ``fed_layer_index`` is the last block. An edit at block ``j`` (an SAE's hook)
reaches the LM through the main path and through every tap at a block ``≥ j``; the taps *before* ``j`` read the
unedited activations, so they still carry what was ablated — a tap bypasses the hook.
:meth:`Qwen3VLAdapter.deepstack_taps` lists the taps (vision block, LM layer) and
:meth:`Qwen3VLAdapter.taps_bypassing` those an SAE at a given layer does not reach. The default hook layer is the
last block (where the main path reads): every tap of the released checkpoints comes before it, so an ablation there
edits the main path only; an SAE on a block at or before the first tap (block 8) reaches every path. Every tap's
token ↔ patch map is the main path's (the tap's merger groups the same 2×2 patches into the same image tokens, its
rows scattered over the same image positions): ``tests/plugins/test_qwen3_vl.py`` checks it by perturbing single
patches at each tap.

``A[t, p]`` keeps its meaning: attention of output token ``t`` to the image-token positions (which hold the main
path's features plus the taps' additions), spread over each token's four patches.

Shapes: hooked block output ``[Σ h·w, d_vision]``; each tap's features ``[Σ h·w / 4, d_text]``.
"""

from __future__ import annotations

from .qwen2_vl import Qwen2VLAdapter


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl", "qwen3_vl_moe")  # type: ignore[assignment]  # the base's is inferred as one str
    model_class = "AutoModelForImageTextToText"  # Qwen3VL… or Qwen3VLMoe…ForConditionalGeneration by model_type

    def vision_width(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    def deepstack_taps(self) -> list[tuple[str, int]]:
        """``(vision block path, LM layer)`` of every DeepStack tap: that block's output, through its own merger,
        is added to the image tokens' hidden states after that LM decoder layer."""
        paths = self.vision_layer_paths()
        return [(paths[int(block)], i) for i, block in enumerate(self.model.model.visual.deepstack_visual_indexes)]

    def taps_bypassing(self, hook_layer: str) -> list[tuple[str, int]]:
        """The taps an edit at ``hook_layer`` does not reach (blocks before it): they feed the LM unedited."""
        index = self.validate_hook_layer(hook_layer)
        paths = self.vision_layer_paths()
        return [(path, layer) for path, layer in self.deepstack_taps() if paths.index(path) < index]
