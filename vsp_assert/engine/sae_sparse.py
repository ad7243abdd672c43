"""The SAE's sparse paths: a bounded encode to :class:`~vsp_assert.engine.sparse.SparseActs`, the decode of
sparse codes, and the activations of a few latents without the full encode.

Why a module of its own: a 65,536-latent SAE on CLIP-L's 576 patches has a dense pre-activation of 151 MB
(float32), and a dense code of the same size; a trace needs neither. :func:`encode_sparse` computes the
pre-activations one tile ``[rows, cols]`` at a time (``rows`` patches × ``cols`` latents, at most
``chunk_bytes`` together: 32 MiB by default) and keeps, per patch, only what fires: for a TopK SAE a running
top-k merged tile by tile (the top k of a union is the top k of the tiles' top k's, so the result is exactly
``encode``'s), for standard and JumpReLU SAEs the nonzero entries. Tiles span all patches of an image when they
fit and split the latents: each tile then reads its slice of ``W_enc`` once (splitting the patches instead would
stream the whole encoder matrix once per chunk, measured 1.5–2× slower on CPU).

:func:`encode_columns` gives ``f[..., latents]`` for the ``u`` latents an intervention edits, reading ``u``
encoder columns: exact for standard and JumpReLU SAEs; for TopK, whether a latent is in a patch's top k needs the
patch's whole pre-activation row, so it takes that membership from the case's codes when the caller has them
(the Scratchpad passes its trace's, computed by the one encode of the image) and otherwise runs
:func:`encode_sparse`. The functions take the SAE as an argument (duck-typed: this module imports no SAE class),
and :class:`~vsp_assert.engine.sae_model.SAE` exposes them as methods.

Shapes: ``x [P, d_in]`` (leading dimensions are flattened into ``P``), codes ``[P, w]``, ``latents [u]``.
"""

from __future__ import annotations

from typing import Any

import torch

from vsp_assert.engine.sparse import SparseActs

#: the most bytes one pre-activation tile may take (the encode's only intermediate that grows with d_sae)
ENCODE_CHUNK_BYTES = 32 * 2**20
_MAX_ROWS = 1024  # patches per tile: an image's patches fit in one tile up to here


def tile_shape(n_rows: int, d_sae: int, element_size: int, chunk_bytes: int | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of the pre-activation tile: all rows up to 1,024, then as many latents as fit in
    ``chunk_bytes`` (default :data:`ENCODE_CHUNK_BYTES`, read at call time)."""
    chunk_bytes = ENCODE_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    rows = max(1, min(n_rows, _MAX_ROWS, chunk_bytes // (element_size * min(d_sae, 256))))
    cols = max(1, min(d_sae, chunk_bytes // (element_size * rows)))
    return rows, cols


def encode_sparse(sae: Any, x: torch.Tensor, *, chunk_bytes: int | None = None) -> SparseActs:
    """The codes of ``x [..., d_in]`` as :class:`SparseActs` over the flattened rows, computed tile by tile
    (peak: one ``[rows, cols]`` tile of at most ``chunk_bytes``, plus the kept entries). Equal to
    ``SparseActs.from_dense(sae.encode(x))`` up to the order of each row's entries."""
    sae._check_input(x)
    sae_in = sae.sae_input(x).reshape(-1, sae.d_in)  # [P, d_in], in the weights' dtype
    n, d_sae = sae_in.shape[0], sae.d_sae
    w_enc, b_enc = sae.W_enc, sae.b_enc  # [d_in, d_sae], [d_sae]
    rows, cols = tile_shape(n, d_sae, w_enc.element_size(), chunk_bytes)
    arch = sae.architecture
    if arch == "topk":
        k = int(sae.cfg.k)
        got_i, got_v = [], []
        for r0 in range(0, n, rows):
            xr = sae_in[r0 : r0 + rows]  # [rows, d_in]
            best_v = best_i = torch.empty(xr.shape[0], 0)
            for c0 in range(0, d_sae, cols):
                pre = xr @ w_enc[:, c0 : c0 + cols] + b_enc[c0 : c0 + cols]  # [rows, cols]: the one tile
                top = torch.topk(pre, k=min(k, pre.shape[1]), dim=-1)
                v, i = top.values, top.indices + c0
                if c0 == 0:
                    best_v, best_i = v, i
                else:  # top k of (kept ∪ tile) = top k of (kept top k ∪ tile top k)
                    both_v, both_i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)  # [rows, ≤ 2k]
                    top = torch.topk(both_v, k=min(k, both_v.shape[1]), dim=-1)
                    best_v, best_i = top.values, both_i.gather(1, top.indices)
            got_v.append(torch.relu(best_v))
            got_i.append(best_i.to(torch.int32))
        return SparseActs(torch.cat(got_i), torch.cat(got_v), d_sae)
    patches, latents, values = [], [], []
    for r0 in range(0, n, rows):
        xr = sae_in[r0 : r0 + rows]
        for c0 in range(0, d_sae, cols):
            pre = xr @ w_enc[:, c0 : c0 + cols] + b_enc[c0 : c0 + cols]  # [rows, cols]
            act = torch.relu(pre)
            if arch == "jumprelu":
                act = act * (pre > sae.threshold[c0 : c0 + cols]).to(pre.dtype)
            p, j = torch.nonzero(act, as_tuple=True)
            patches.append(p + r0)
            latents.append(j + c0)
            values.append(act[p, j])
    return SparseActs.from_coords(torch.cat(patches), torch.cat(latents), torch.cat(values), n, d_sae)


def decode_sparse(sae: Any, codes: SparseActs, x: torch.Tensor | None = None) -> torch.Tensor:
    """``x̂ [P, d_in]`` from sparse codes: ``Σ_j values[p, j] · W_dec[indices[p, j]] + b_dec``, one
    ``embedding_bag`` (no ``[P, d_sae]`` and no ``[P, w, d_in]`` gather). With run-time normalisation pass the
    input ``x`` the codes came from, as for ``SAE.decode``."""
    w_dec = sae.W_dec  # [d_sae, d_in]
    out = torch.nn.functional.embedding_bag(
        codes.indices.to(w_dec.device).long(), w_dec, per_sample_weights=codes.values.to(w_dec.device, w_dec.dtype),
        mode="sum",
    ) + sae.b_dec  # [P, d_in]
    return sae.undo_norm(out, x)


def encode_columns(sae: Any, x: torch.Tensor, latents: torch.Tensor,
                   member: torch.Tensor | None = None) -> torch.Tensor:
    """``encode(x)[..., latents]`` — ``[..., P, u]`` for ``x [..., P, d_in]`` — reading ``u`` encoder columns.

    ``member`` (``[P, u]`` bool, TopK only): whether each latent is in each patch's top k, when the caller knows
    it (the case's codes, :meth:`SparseActs.contains`); without it a TopK SAE runs :func:`encode_sparse` to find
    out. Values are always computed from ``x`` itself.
    """
    sae._check_input(x)
    ids = latents.to(sae.W_enc.device)
    pre = sae.sae_input(x) @ sae.W_enc[:, ids] + sae.b_enc[ids]  # [..., P, u]
    act = torch.relu(pre)
    arch = sae.architecture
    if arch == "jumprelu":
        return act * (pre > sae.threshold[ids]).to(pre.dtype)
    if arch == "topk":
        if member is None:
            member = encode_sparse(sae, x).contains(ids.cpu()).reshape(*pre.shape)
        return act * member.to(act.device).to(act.dtype)
    return act
