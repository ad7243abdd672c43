"""Does the SAE still fit the model under test? Its explained variance at the hooked layer, and its identity.

An SAE is trained on one vision tower. When an update changes that tower (a fine-tune that unfreezes it, another
checkpoint), the SAE's latents stop meaning what their labels say, and every concept check becomes noise. So
each trace records how well the SAE reconstructs the activations it explained (:func:`explained_variance`,
the usual figure of SAE training: ``1 − ‖x − x̂‖² / ‖x − x̄‖²`` over the image's patches), and baselines record
which SAE they were made with (:func:`sae_identity`, a hash of its weights) so that a baseline recorded with
another SAE is never compared as if it were drift.

:func:`sae_fit` measures it from the trace's sparse codes (``SAE.decode_sparse``: one ``embedding_bag`` over the
latents that fired), so the figure costs no ``[P, d_sae]`` tensor however wide the SAE.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import torch

_IDENTITIES: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``1 − Σ(x − x̂)² / Σ(x − x̄)²`` for activations ``x [P, d]`` and their reconstruction ``x̂ [P, d]``
    (``x̄ [d]``: the mean over the P patches). 1.0 is a perfect fit; 0 is no better than the mean patch; it can
    be negative. With a single patch the variance is taken around zero instead."""
    x = x.detach().double()
    x_hat = x_hat.detach().double()
    centre = x.mean(0, keepdim=True) if x.shape[0] > 1 else torch.zeros_like(x[:1])  # [1, d]
    total = float(((x - centre) ** 2).sum())
    residual = float(((x - x_hat) ** 2).sum())
    if total == 0.0:
        return 1.0 if residual == 0.0 else float("-inf")
    return 1.0 - residual / total


def sae_fit(sae: Any, x: torch.Tensor, codes: Any) -> float:
    """The explained variance of ``sae`` on activations ``x [P, d_in]`` given their sparse codes ``codes``
    (:class:`~vsp_assert.engine.sparse.SparseActs` from ``sae.encode_sparse(x)``): reconstruction ``[P, d_in]``
    by the sparse decode, then :func:`explained_variance`."""
    return explained_variance(x, sae.decode_sparse(codes, x))


def sae_identity(sae: torch.nn.Module) -> str:
    """A short, stable hash of an SAE's weights (names, shapes, dtypes and bytes of its state dict): two SAEs
    share it exactly when their weights are identical. Computed once per SAE object."""
    known = _IDENTITIES.get(sae)
    if known is not None:
        return known
    digest = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    value = digest.hexdigest()[:16]
    _IDENTITIES[sae] = value
    return value
