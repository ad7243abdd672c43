"""Several views per image: the layout code every tiled family's adapter shares.

Families that cut an image into tiles or crops (LLaVA-NeXT and LLaVA-OneVision: base view + anyres tiles;
Idefics3 / SmolVLM: tiles + a global view; Gemma 3: the whole image + pan-and-scan crops) run the vision tower on
every *view* as one batch row, so the hooked layer's output is ``[ΣV, S, d]`` — the views of all batch elements
stacked, element by element — while the engine reads patches per element, ``[B, V_max·P, d]``, patch ``view · P +
row · cols + col`` (zero-padded past an element's own views). :class:`MultiViewAdapter` owns that move in both
directions and the count of views per element; a family says only how many views each element has
(:meth:`MultiViewAdapter.element_views`). :func:`block_diagonal` and :func:`sparse_map` build the large maps such
families need (one view's map repeated over the views; a sparse COO map from its entries).

It lives in the engine, beside :class:`~vsp_assert.engine.adapter.PatchMap`, rather than in ``plugins/``: it is
family-agnostic layout, and a third-party adapter for a tiled family (installed through the entry-point group,
outside this package) builds on it the way the built-in ones do.

Shapes: hooked output ``[ΣV, S, d]`` (``S`` = ``P`` patch tokens plus any class token) ↔ patches
``[B, V_max·P, d]``; per-view map ``[t, P]`` → block-diagonal ``[V·t, V·P]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vsp_assert.engine.adapter import Adapter
from vsp_assert.errors import ModelError


def stack_views(per_view: torch.Tensor, views: Sequence[int]) -> torch.Tensor:
    """``[ΣV, P, d]`` patches, views of element 0 first → ``[B, V_max·P, d]``, zero-padded past each element's
    ``views[b]`` views."""
    p, d = per_view.shape[1], per_view.shape[2]
    out = per_view.new_zeros(len(views), max(views) * p, d)  # [B, V_max·P, d]
    for b, chunk in enumerate(torch.split(per_view, list(views))):  # chunk: [V_b, P, d]
        out[b, : chunk.shape[0] * p] = chunk.reshape(-1, d)
    return out


def unstack_views(patches: torch.Tensor, views: Sequence[int], per_view: int) -> torch.Tensor:
    """The inverse of :func:`stack_views`: ``[B, V_max·P, d]`` → ``[ΣV, P, d]`` (padding dropped)."""
    return torch.cat([patches[b, : v * per_view].reshape(v, per_view, -1) for b, v in enumerate(views)])


def views_from_tokens(family: str, inputs: dict[str, torch.Tensor], image_token_id: int,
                      tokens_per_view: int) -> list[int]:
    """Views of each element of a family whose every view is ``tokens_per_view`` image tokens in the prompt:
    its image-token count over that (an error when a count is not a whole number of views)."""
    counts = (inputs["input_ids"] == image_token_id).sum(1).tolist()  # [B]
    if any(c % tokens_per_view for c in counts):
        raise ModelError(f"{family}: image-token counts {counts} are not whole views of {tokens_per_view} tokens",
                         fix="one image per prompt, built with the model's own processor")
    return [int(c) // tokens_per_view for c in counts]


def sparse_map(token: torch.Tensor, patch: torch.Tensor, weight: torch.Tensor, shape: tuple[int, int]
               ) -> torch.Tensor:
    """A coalesced sparse COO ``token_to_patch [N_img, P]`` from its entries (``token``, ``patch`` long,
    ``weight`` float, all ``[nnz]``); checked, so an index outside ``shape`` is an error."""
    return torch.sparse_coo_tensor(torch.stack([token, patch]), weight, shape, check_invariants=True).coalesce()


def block_diagonal(block: torch.Tensor, views: int) -> torch.Tensor:
    """One view's dense map ``[t, P]`` repeated over ``views`` views: the sparse ``[V·t, V·P]`` whose view ``v``
    maps its tokens ``v·t …`` to its patches ``v·P …`` exactly as the first view does."""
    token, patch = torch.nonzero(block, as_tuple=True)  # [nnz]
    offsets = torch.arange(views)[:, None]  # [V, 1]
    return sparse_map((token + offsets * block.shape[0]).flatten(), (patch + offsets * block.shape[1]).flatten(),
                      block[token, patch].repeat(views), (views * block.shape[0], views * block.shape[1]))


class MultiViewAdapter(Adapter):
    """An adapter whose vision tower runs on several views per image, ``[ΣV, S, d]`` at the hook.

    Subclasses say how many views each element has (:meth:`element_views`); reading and writing the patches per
    element follows. Put it before the family's base in the class bases (``class X(MultiViewAdapter,
    LlavaAdapter)``) so that the base's batch-first :meth:`patches_of` still picks each view's patch tokens.
    """

    def element_views(self, inputs: dict[str, torch.Tensor]) -> list[int] | None:
        """Views of each batch element as the forward's ``inputs`` say, or ``None`` when they do not say."""
        raise NotImplementedError

    def views_per_image(self, inputs: dict[str, torch.Tensor] | None, hidden_rows: int, batch: int) -> list[int]:
        """Views of each of ``batch`` elements whose tower output has ``hidden_rows`` rows: from the inputs, or
        without them an even split (true for the identical rows of a batched intervention)."""
        views = self.element_views(inputs) if inputs is not None else None
        if views is None:
            views = [hidden_rows // batch] * batch
        if sum(views) != hidden_rows:
            raise ModelError(f"{self.family}: the hooked layer ran on {hidden_rows} views, the inputs imply "
                             f"{sum(views)}", fix="pass the forward's inputs to patches_of / with_patches")
        return views

    def patches_of(self, hidden: torch.Tensor, batch: int,
                   inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        views = self.views_per_image(inputs, hidden.shape[0], batch)
        return stack_views(super().patches_of(hidden, hidden.shape[0]), views)  # [ΣV, P, d] → [B, V_max·P, d]

    def with_patches(self, hidden: torch.Tensor, patches: torch.Tensor,
                     inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        views = self.views_per_image(inputs, hidden.shape[0], patches.shape[0])
        per_view = unstack_views(patches, views, len(self.patch_token_index(hidden.shape[1])))  # [ΣV, P, d]
        return super().with_patches(hidden, per_view)
