"""Random controls for causal claims: latent sets of the claimed set's size and activation mass, drawn from the
latents active on the image.

A claim such as "ablating stripes restores the shape" means little if ablating *any* few strong latents does
the same. ``control: random`` ablates ``n`` random sets beside the claimed one, in the same batched forward
(:meth:`~vsp_assert.engine.scratchpad.Scratchpad.intervene`), and the checks compare how often each achieves
the claimed effect. A control set:

- has the claimed set's size;
- is drawn from the latents active on this image (on the ablated patches), never from the claimed latents nor
  the noise latents (dead or dense, ``Trace.hidden``);
- has a total activation mass ``Σ_{k∈S} Σ_p f[p, k]`` within ``tolerance`` (relative) of the claimed set's,
  so that a control removes as much activation as the claim does.

Draws are rejection-sampled from a generator the caller seeds (per case and row), so a run is reproducible. When
too few sets match the mass (few strong latents on a sparse image), the closest draws fill the quota and
:attr:`ControlDraw.matched` says how many matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vsp_assert.engine.trace import Trace

#: draws tried per control set wanted
DRAWS_PER_SET = 64


@dataclass(frozen=True)
class ControlDraw:
    """The control sets of one claim on one image; ``target_mass``: the claimed set's activation mass."""

    sets: tuple[tuple[int, ...], ...]
    masses: tuple[float, ...]
    target_mass: float
    matched: int  # how many sets are within the mass tolerance

    @property
    def n(self) -> int:
        return len(self.sets)


def latent_mass(trace: Trace, patches: Sequence[int] | None = None) -> np.ndarray:
    """``[d_sae]`` — each latent's activation summed over the (chosen) patches of the trace's image."""
    return trace.sparse_acts.total(patches).double().numpy()  # from the sparse codes: no [P, d_sae]


def draw_controls(trace: Trace, claimed: Sequence[int], n: int, rng: np.random.Generator, *,
                  tolerance: float = 0.25, patches: Sequence[int] | None = None) -> ControlDraw:
    """``n`` random control sets for the ``claimed`` latents on ``trace``'s image (see the module docstring).

    The claimed set counts its latents active on the image (an inactive latent's ablation is a no-op). Draws
    are vectorised: half uniform over the pool, half weighted by mass (Gumbel top-k), so that a heavy claim finds
    heavy controls; fewer than ``n`` sets (possibly none) only when fewer distinct sets exist."""
    mass = latent_mass(trace, patches)  # [d_sae]
    claimed_set = sorted({int(i) for i in claimed if mass[int(i)] > 0})
    size = len(claimed_set)
    target = float(mass[claimed_set].sum()) if claimed_set else 0.0
    taken = set(claimed_set) | {int(i) for i in claimed} | set(trace.hidden)
    pool = np.array([k for k in np.flatnonzero(mass > 0).tolist() if k not in taken], dtype=np.int64)  # [Q]
    if size == 0 or len(pool) < size:
        return ControlDraw((), (), target, 0)
    draws = DRAWS_PER_SET * n
    noise = rng.gumbel(size=(draws, len(pool)))  # [D, Q]
    weighted = np.log(mass[pool])[None, :] + noise
    keys = np.where((np.arange(draws) % 2 == 0)[:, None], noise, weighted)  # even rows uniform, odd by mass
    picks = np.sort(pool[np.argsort(-keys, axis=1)[:, :size]], axis=1)  # [D, size]
    masses = mass[picks].sum(axis=1)  # [D]
    error = np.abs(masses - target) / max(target, 1e-12)
    order = np.lexsort((np.arange(draws), error > tolerance))  # matched first, in draw order
    matched_first = [int(i) for i in order if error[i] <= tolerance]
    rest = sorted((int(i) for i in order if error[i] > tolerance), key=lambda i: (error[i], i))
    chosen: dict[tuple[int, ...], float] = {}
    for i in matched_first + rest:
        chosen.setdefault(tuple(int(k) for k in picks[i]), float(masses[i]))
        if len(chosen) >= n:
            break
    sets = list(chosen.items())
    matched = sum(1 for _, m in sets if abs(m - target) <= tolerance * target)
    return ControlDraw(tuple(s for s, _ in sets), tuple(m for _, m in sets), target, matched)
