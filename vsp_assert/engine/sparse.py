"""Sparse SAE codes: the latents that fire on each patch, as indices and values, never ``[P, d_sae]``.

A TopK SAE fires ``k`` latents per patch and a JumpReLU SAE a few dozen, whatever its width; stored densely, one
trace of a 65,536-latent SAE on CLIP-L's 576 patches holds 145 MB, almost all zeros. :class:`SparseActs` keeps
what fired, per patch, in a padded row layout (``indices [P, w]``, ``values [P, w]``, ``w`` the most latents any
patch fires; padding is latent 0 with value 0, which adds nothing to any sum), and answers the questions the
engine and the checks ask of ``f[p, k]`` without building it: the attention-weighted scores ``s = A · f``, the
image-level mean, the activations of a few named latents on every patch. ``dense()`` builds ``[P, d_sae]`` for
whoever really wants it (``Trace.acts``). Plain data: it imports nothing of the package.

Shapes: ``P`` patches, ``w`` stored latents per patch, ``d_sae`` the SAE's width, ``T`` output tokens, ``n``
latents asked about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SparseActs:
    """SAE latent activations ``f[p, k]`` of ``P`` patches, stored as what fired.

    Attributes:
        indices: ``[P, w]`` int32 — latent ids per patch (padding: 0).
        values: ``[P, w]`` float — their activations (padding: 0.0).
        d_sae: the SAE's width (the dense form is ``[P, d_sae]``).
        padded: whether some rows end in padding slots (latent 0, value 0). A TopK SAE's codes are not padded:
            each of a patch's ``k`` slots is a latent of its top k, even one whose activation is 0.
    """

    indices: torch.Tensor
    values: torch.Tensor
    d_sae: int
    padded: bool = False

    def __post_init__(self) -> None:
        if self.indices.shape != self.values.shape or self.indices.dim() != 2:
            raise ValueError(f"indices {tuple(self.indices.shape)} and values {tuple(self.values.shape)} must both "
                             "be [P, w]")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dense(cls, f: torch.Tensor) -> SparseActs:
        """The nonzero entries of dense codes ``f [P, d_sae]`` (at least one slot per patch)."""
        width = max(1, int((f != 0).sum(-1).max())) if f.numel() else 1
        values, ids = torch.topk(f.abs(), k=min(width, f.shape[-1]), dim=-1)  # [P, w]; zeros come last
        values = f.gather(-1, ids)
        return cls(torch.where(values != 0, ids, 0).to(torch.int32), values, int(f.shape[-1]), padded=True)

    @classmethod
    def from_coords(cls, patch: torch.Tensor, latent: torch.Tensor, value: torch.Tensor, n_patches: int,
                    d_sae: int) -> SparseActs:
        """Codes from coordinate lists (``patch [N]``, ``latent [N]``, ``value [N]``), padded per patch."""
        counts = torch.bincount(patch, minlength=n_patches)  # [P]
        width = max(1, int(counts.max())) if patch.numel() else 1
        order = torch.argsort(patch, stable=True)
        patch, latent, value = patch[order], latent[order], value[order]
        start = torch.cumsum(counts, 0) - counts  # [P]: where each patch's run begins
        slot = torch.arange(patch.numel(), device=patch.device) - start[patch]
        indices = torch.zeros(n_patches, width, dtype=torch.int32, device=patch.device)
        values = torch.zeros(n_patches, width, dtype=value.dtype, device=patch.device)
        indices[patch, slot] = latent.to(torch.int32)
        values[patch, slot] = value
        return cls(indices, values, d_sae, padded=True)

    # ------------------------------------------------------------------ sizes
    @property
    def n_patches(self) -> int:
        return int(self.indices.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """The dense shape ``(P, d_sae)``."""
        return (self.n_patches, self.d_sae)

    @property
    def nbytes(self) -> int:
        """Bytes held (indices and values)."""
        return sum(t.numel() * t.element_size() for t in (self.indices, self.values))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SparseActs:
        """A copy on ``device`` with values in ``dtype`` (indices stay int32)."""
        return SparseActs(self.indices.to(device), self.values.to(device=device, dtype=dtype), self.d_sae,
                          self.padded)

    # ------------------------------------------------------------------ reading
    def dense(self) -> torch.Tensor:
        """``f [P, d_sae]``: the whole matrix, zeros included (P × d_sae × 4 bytes: built on each call)."""
        out = torch.zeros(self.n_patches, self.d_sae, dtype=self.values.dtype, device=self.values.device)
        return out.scatter_add_(1, self.indices.long(), self.values)

    def weighted(self, weights: torch.Tensor) -> torch.Tensor:
        """``weights [T, P] · f [P, d_sae]`` → ``[T, d_sae]`` (the attention-weighted scores ``s[t, k]``)."""
        T = int(weights.shape[0])
        contrib = weights.to(self.values.dtype)[:, :, None] * self.values[None]  # [T, P, w]
        out = torch.zeros(T, self.d_sae, dtype=self.values.dtype, device=self.values.device)
        return out.index_add_(1, self.indices.flatten().long(), contrib.reshape(T, self.values.numel()))

    def mean(self) -> torch.Tensor:
        """The mean of ``f[p, k]`` over patches: ``[d_sae]`` (the image-level scores)."""
        return self.total() / max(1, self.n_patches)

    def total(self, patches: Sequence[int] | None = None) -> torch.Tensor:
        """``Σ_p f[p, k]`` over all patches, or over ``patches``: ``[d_sae]``."""
        ids, values = self.indices, self.values
        if patches is not None:
            rows = torch.as_tensor(list(patches), dtype=torch.long, device=ids.device)
            ids, values = ids[rows], values[rows]
        out = torch.zeros(self.d_sae, dtype=values.dtype, device=values.device)
        return out.index_add_(0, ids.flatten().long(), values.flatten())

    def columns(self, latents: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """``f[:, latents]``: ``[P, n]``, the activations of the named latents on every patch (0 where silent)."""
        return self._lookup(latents)[1]

    def contains(self, latents: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """``[P, n]`` bool: whether latent ``latents[j]`` is among patch p's stored latents (for a TopK SAE: in
        its top k, whatever its value). Padding slots hold no latent."""
        return self._lookup(latents)[0]

    def _lookup(self, latents: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For every (patch, named latent): whether it is stored, and its value (0 where not): ``[P, n]`` each.
        Each patch's row is sorted and searched (``O(P · (w log w + n log w))``, whatever ``d_sae``)."""
        ids = torch.as_tensor(latents, dtype=torch.long).flatten().to(self.indices.device)  # [n]
        stored = self.indices.long()  # [P, w]
        if self.padded:  # padding slots get a key no latent has, so a real latent 0 is never shadowed
            stored = torch.where(self.values != 0, stored, self.d_sae)
        keys, order = stored.sort(dim=1)  # [P, w]
        values = self.values.gather(1, order)
        query = ids[None, :].expand(self.n_patches, -1).contiguous()  # [P, n]
        at = torch.searchsorted(keys, query).clamp_max(max(0, keys.shape[1] - 1))  # [P, n]
        found = keys.gather(1, at) == query
        return found, torch.where(found, values.gather(1, at), torch.zeros((), dtype=values.dtype))
