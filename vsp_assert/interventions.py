"""Interventions on SAE latents: ablate or steer concepts and see what the answer does.

An :class:`Intervention` sets chosen latents to a value (0 = ablate) or scales them, on all or chosen patches of
the hooked vision layer. The edit keeps the SAE's reconstruction error: ``z' = z + (f' − f) @ W_dec`` (see
:meth:`vsp_assert.sae.SAE.decoder_delta`), so with nothing changed the delta is exactly zero and the patched
forward *is* the unpatched one, bit for bit.

All interventions of one case run as one batched teacher-forced forward (one row per intervention plus an
unpatched reference row); only rows whose greedy answer diverges get one more batched ``generate`` to read
their new answer.

Shapes: hooked layer output ``[B, S, d_in]``; patch activations ``x [B, P, d_in]``; latents ``f [B, P, d_sae]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import InputError
from .labels import ConceptRef


@dataclass(frozen=True)
class Intervention:
    """Change ``concepts`` (names, ``"#id"`` or ints) on ``patches`` (None = all) of the hooked layer.

    ``value``: set the latents to this value (0.0 = ablation). ``scale``: multiply them instead (steering
    up or down). Exactly one of the two applies; ``scale`` wins when given.
    """

    concepts: tuple[ConceptRef, ...]
    value: float = 0.0
    scale: float | None = None
    patches: tuple[int, ...] | None = None
    label: str | None = None

    @classmethod
    def ablate(cls, *concepts: ConceptRef, patches: Sequence[int] | None = None,
               label: str | None = None) -> Intervention:
        return cls(tuple(concepts), 0.0, None, tuple(patches) if patches is not None else None, label)

    @classmethod
    def steer(cls, *concepts: ConceptRef, value: float | None = None, scale: float | None = None,
              patches: Sequence[int] | None = None, label: str | None = None) -> Intervention:
        if value is None and scale is None:
            raise InputError("steering needs a value or a scale", field="steer")
        return cls(tuple(concepts), 0.0 if value is None else float(value), scale,
                   tuple(patches) if patches is not None else None, label)

    def describe(self) -> str:
        if self.label:
            return self.label
        what = ", ".join(str(c) for c in self.concepts)
        how = f"×{self.scale:g}" if self.scale is not None else ("ablate" if self.value == 0 else f"={self.value:g}")
        where = "" if self.patches is None else f" on {len(self.patches)} patches"
        return f"{how} [{what}]{where}"


@dataclass(frozen=True)
class ResolvedIntervention:
    """An intervention with latent ids and a patch mask: ``latents [S]`` long, ``patch_mask [P]`` bool."""

    spec: Intervention
    latents: torch.Tensor
    patch_mask: torch.Tensor

    def delta(self, f: torch.Tensor) -> torch.Tensor:
        """Latent change ``[P, d_sae]`` for one batch row's latents ``f [P, d_sae]`` (on ``f``'s device)."""
        delta = torch.zeros_like(f)
        if self.latents.numel() == 0 or not bool(self.patch_mask.any()):
            return delta
        latents = self.latents.to(f.device)
        rows = torch.nonzero(self.patch_mask).flatten().to(f.device)  # [P_sel]
        sub = f[rows[:, None], latents[None, :]]  # [P_sel, S]
        target = sub * self.spec.scale if self.spec.scale is not None else torch.full_like(sub, self.spec.value)
        delta[rows[:, None], latents[None, :]] = target - sub
        return delta


def resolve(spec: Intervention, labels: Any, n_patches: int) -> ResolvedIntervention:
    ids = labels.resolve_many(list(spec.concepts)) if spec.concepts else []
    mask = torch.ones(n_patches, dtype=torch.bool)
    if spec.patches is not None:
        bad = [p for p in spec.patches if not isinstance(p, int) or not 0 <= p < n_patches]
        if bad:
            raise InputError("patch index out of range", field="patches", received=bad,
                             allowed=f"0..{n_patches - 1}")
        mask = torch.zeros(n_patches, dtype=torch.bool)
        mask[list(spec.patches)] = True
    return ResolvedIntervention(spec, torch.tensor(ids, dtype=torch.long), mask)


def make_edit(
    sae: Any,
    adapter: Any,
    rows: Sequence[ResolvedIntervention | None],
    inputs: dict[str, torch.Tensor] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """A hook edit for a batch whose row ``b`` gets intervention ``rows[b]`` (None = left untouched).

    ``inputs``: the model inputs of the edited forward, for families whose patch layout per element depends on
    them (several views, packed sequences); see :meth:`vsp_assert.adapters.Adapter.patches_of`.
    Returns ``None`` (no change at all) when every delta is zero, so no-op interventions are exact.
    """

    n = len(rows)

    def edit(hidden: torch.Tensor) -> torch.Tensor | None:  # hidden: the hooked layer's output
        expand = getattr(adapter, "vision_once", False) and hidden.shape[0] == 1 and n > 1
        if expand:  # the tower ran once for the whole batch: every row starts from the same activations
            hidden = hidden.expand(n, *hidden.shape[1:]).contiguous()
        x = adapter.patches_of(hidden, n, inputs)  # [B, P, d_in]
        if x.shape[0] != n:
            raise RuntimeError(f"intervention batch has {x.shape[0]} rows, expected {n}")
        # rows expanded from one tower pass are identical: encode one and share it
        f = sae.encode(x[:1]).expand(n, -1, -1) if expand else sae.encode(x)  # [B, P, d_sae]
        delta = torch.zeros(f.shape, dtype=f.dtype, device=f.device)
        for b, row in enumerate(rows):
            if row is not None:
                delta[b] = row.delta(f[b])
        if not bool(delta.any()):
            return hidden if expand else None
        return adapter.with_patches(hidden, x + sae.decoder_delta(delta, x).to(x.dtype), inputs)

    return edit


@dataclass
class InterventionResult:
    """What an intervention did to the answer.

    ``p_before`` / ``p_after``: probability of the original answer (product over its tokens, teacher-forced) on
    the unpatched reference row and on the patched row of the same batched forward; ``drop = p_before −
    p_after``. ``changed``: the patched model's greedy answer differs from the original — known from the
    teacher-forced forward alone (greedy decoding agrees with the original answer exactly when every
    teacher-forced argmax does, the end of the answer included). ``answer_after`` is that greedy answer; for a
    changed answer it is generated on first access, for all changed rows of the batch at once.
    """

    intervention: Intervention
    latents: list[int]
    answer_before: str
    p_before: float
    p_after: float
    changed: bool
    token_p_after: list[float] = field(default_factory=list)
    _answer_after: str | None = field(default=None, repr=False)
    _generate: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def answer_after(self) -> str:
        """The patched model's greedy answer (the original one when ``changed`` is false)."""
        if not self.changed:
            return self.answer_before
        if self._answer_after is None:
            if self._generate is None:
                raise RuntimeError("this result has no way to generate its answer")
            self._generate()
        assert self._answer_after is not None
        return self._answer_after

    @property
    def drop(self) -> float:
        return self.p_before - self.p_after

    @property
    def relative_drop(self) -> float:
        return self.drop / self.p_before if self.p_before > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "intervention": self.intervention.describe(),
            "latents": list(self.latents),
            "answer_before": self.answer_before,
            "answer_after": self.answer_after,
            "changed": self.changed,
            "p_before": self.p_before,
            "p_after": self.p_after,
            "drop": self.drop,
        }
