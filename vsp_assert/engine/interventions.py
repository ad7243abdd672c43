"""Interventions on SAE latents: ablate or steer concepts and see what the answer does.

An :class:`Intervention` sets chosen latents to a value (0 = ablate) or scales them, on all or chosen patches of
the hooked vision layer. The edit keeps the SAE's reconstruction error: ``z' = z + (f' − f) @ W_dec`` (see
:meth:`vsp_assert.engine.sae.SAE.decoder_delta`), so with nothing changed the delta is exactly zero and the patched
forward *is* the unpatched one, bit for bit.

All interventions of one case run as one batched teacher-forced forward (one row per intervention plus an
unpatched reference row); only rows whose greedy answer diverges get one more batched ``generate`` to read
their new answer.

Shapes: hooked layer output ``[B, S, d_in]``; patch activations ``x [B, P, d_in]``; latents ``f [B, P, d_sae]``,
of which the edit reads only the ``u`` latents some row changes (``[B, P, u]``, see :class:`EditPlan`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vsp_assert.engine.labels import ConceptRef
from vsp_assert.errors import InputError


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

    @property
    def is_noop(self) -> bool:
        """True when it names no latent or no patch: it cannot change the model."""
        return self.latents.numel() == 0 or not bool(self.patch_mask.any())


@dataclass(frozen=True)
class EditPlan:
    """The edits of a batch, one row each, over the union of the latents any row touches.

    Built once per batched forward (on the CPU, from the resolved interventions) so the hook does the same few
    tensor operations whatever the number of rows:

    - ``latents``: ``[u]`` long — the union of edited latent ids (sorted);
    - ``cells``: ``[B, P, u]`` bool — row b changes latent ``latents[j]`` on patch p;
    - ``use_scale``: ``[B]`` bool, ``scale``: ``[B]``, ``value``: ``[B]`` — a row's new value is
      ``f · scale`` where ``use_scale`` and ``value`` elsewhere.

    Only ``u`` latents are read and written (not ``d_sae``), so the edit costs ``B · P · u`` however wide the
    SAE is.
    """

    latents: torch.Tensor
    cells: torch.Tensor
    use_scale: torch.Tensor
    scale: torch.Tensor
    value: torch.Tensor
    empty: bool  # no row changes anything (known on the host, so the hook never asks the device)

    @classmethod
    def build(cls, rows: Sequence[ResolvedIntervention | None], device: torch.device | str = "cpu") -> EditPlan:
        """The plan for ``rows``, its tensors on ``device`` (the hooked layer's, so the hook copies nothing)."""
        active = [row for row in rows if row is not None and not row.is_noop]
        union = sorted({int(i) for row in active for i in row.latents.tolist()})
        n_patches = max((int(row.patch_mask.numel()) for row in rows if row is not None), default=0)
        column = {latent: j for j, latent in enumerate(union)}
        cells = torch.zeros(len(rows), n_patches, len(union), dtype=torch.bool)
        use_scale = torch.zeros(len(rows), dtype=torch.bool)
        scale = torch.ones(len(rows))
        value = torch.zeros(len(rows))
        for b, row in enumerate(rows):
            if row is None or row.is_noop:
                continue
            chosen = torch.zeros(len(union), dtype=torch.bool)
            chosen[[column[int(i)] for i in row.latents.tolist()]] = True
            cells[b, : row.patch_mask.numel()] = row.patch_mask[:, None] & chosen[None, :]
            if row.spec.scale is not None:
                use_scale[b], scale[b] = True, float(row.spec.scale)
            else:
                value[b] = float(row.spec.value)
        return cls(torch.tensor(union, dtype=torch.long, device=device), cells.to(device), use_scale.to(device),
                   scale.to(device), value.to(device), empty=not bool(cells.any()))

    def delta(self, f: torch.Tensor) -> torch.Tensor:
        """The change ``[B, P, u]`` of the planned latents, from their activations ``f [B | 1, P, u]``."""
        device, dtype = f.device, f.dtype
        cells = self.cells.to(device)
        n_patches = min(cells.shape[1], f.shape[1])
        f, cells = f[:, :n_patches], cells[:, :n_patches]
        scaled = f * self.scale.to(device, dtype)[:, None, None]  # [B, P, u]
        target = torch.where(self.use_scale.to(device)[:, None, None], scaled,
                             self.value.to(device, dtype)[:, None, None])
        return torch.where(cells, target - f, torch.zeros((), dtype=dtype, device=device))


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
    *,
    same_case: bool = False,
    support: Any = None,
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """A hook edit for a batch whose row ``b`` gets intervention ``rows[b]`` (None = left untouched).

    ``same_case``: every row is a copy of one case (the Scratchpad's intervention batches), so the hooked
    activations are the same in every row and the SAE encodes one row for all.

    ``support``: the case's sparse codes (``Trace.sparse_acts``), for ``same_case`` batches. The edit reads the
    edited latents' encoder columns only (``SAE.encode_columns``); a TopK SAE's top-k membership, which needs the
    whole pre-activation row, is then taken from the case's codes (computed once, on the host, before the
    forward) instead of a second full-width encode. Without it a TopK SAE re-encodes the patches, in tiles.

    ``inputs``: the model inputs of the edited forward, for families whose patch layout per element depends on
    them (several views, packed sequences); see :meth:`vsp_assert.engine.adapter.Adapter.patches_of`.
    Returns ``None`` (the output untouched) when no row names a latent and a patch; a row whose latents do not
    fire, or that is left untouched, gets ``x + 0`` and is exact too. The edit never reads a value back to the
    host: no device synchronisation inside the forward (its plan is built on the CPU beforehand).
    """

    n = len(rows)
    plan = EditPlan.build(rows, device=sae.W_dec.device)
    member = None  # [P, u] bool: TopK membership of the planned latents, from the case's codes
    if support is not None and same_case and not plan.empty and sae.architecture == "topk":
        member = support.contains(plan.latents.cpu()).to(sae.W_dec.device)

    def edit(hidden: torch.Tensor) -> torch.Tensor | None:  # hidden: the hooked layer's output
        expand = getattr(adapter, "vision_once", False) and hidden.shape[0] == 1 and n > 1
        if expand:  # the tower ran once for the whole batch: every row starts from the same activations
            hidden = hidden.expand(n, *hidden.shape[1:]).contiguous()
        if plan.empty:
            return hidden if expand else None
        x = adapter.patches_of(hidden, n, inputs)  # [B, P, d_in]
        if x.shape[0] != n:
            raise RuntimeError(f"intervention batch has {x.shape[0]} rows, expected {n}")
        latents = plan.latents.to(x.device)
        # rows of one case (or expanded from one tower pass) are identical: encode one and share it
        x_enc = x[:1] if expand or same_case else x
        fits = member is not None and member.shape[0] == x_enc.shape[1]
        f = sae.encode_columns(x_enc, latents, member if fits else None)  # [B | 1, P, u]
        delta = plan.delta(f)  # [B, P', u]; zero where nothing changes, so x + change is then x exactly
        change = sae.decoder_delta(delta, x[:, : delta.shape[1]], latents=latents).to(x.dtype)  # [B, P', d_in]
        if change.shape[1] < x.shape[1]:
            change = torch.nn.functional.pad(change, (0, 0, 0, x.shape[1] - change.shape[1]))
        return adapter.with_patches(hidden, x + change, inputs)

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
