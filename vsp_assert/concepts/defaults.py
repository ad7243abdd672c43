"""The defaults of ``sae train``, ``sae import`` and ``concepts build``, without torch.

The command line builds its parsers from these (so ``vsp-assert --help`` never imports torch), and the modules
that do the work (:mod:`.train`, :mod:`.stats`, :mod:`.build`, :mod:`.atlas`, :mod:`.importers`) read the same
values from here, so a default is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Default minimum precision for a latent to be named by a concept (the shipped shapes labels used 0.8).
MIN_PRECISION = 0.8
#: Firing rate above which a latent is *dense* (noise, filtered from rankings). A concept latent fires at most as
#: often as its concept appears; in the shapes world the most common concept (one background texture) covers
#: ~20% of patches and its latents fire on ≤ 0.23, so 0.25 flags only latents that fire on more than a quarter
#: of everything.
DENSE_RATE = 0.25
#: A patch carries a mask's concept when the mask covers at least this fraction of it: the shapes world's own rule
#: (``LABEL_COVERAGE``; a quarter-covered patch visibly shows the concept). 0.5 (majority) is stricter; on a
#: shapes export it costs edge patches their object labels and the colour latents their precision.
MASK_COVERAGE = 0.25
#: The atlas of reference images stays under this many megabytes (thumbnails shrink to fit).
ATLAS_MB = 200.0
#: The published SAE formats ``sae import`` reads (one module each in :mod:`vsp_assert.concepts.importers`).
FORMATS: tuple[str, ...] = ("saev", "prisma", "patchsae")


@dataclass(frozen=True)
class TrainConfig:
    """``sae train``'s options. ``d_sae=None`` → 8 × ``d_in``; ``k=None`` → :func:`default_k`; ``warmup_steps`` is
    capped at a tenth of ``steps``."""

    d_sae: int | None = None
    k: int | None = None  # None: default_k(d_in)
    steps: int = 2000
    batch_size: int = 1024  # activation rows per step
    lr: float = 2e-3
    warmup_steps: int = 100
    aux_k: int = 32
    aux_coef: float = 1 / 32
    dead_after: int = 200_000
    seed: int = 0
    buffer: int = 16384  # rows held in the shuffle buffer
    image_batch: int = 16  # images per model forward
    checkpoint_every: int = 200
    holdout: int | None = None  # held-out images (None: every 10th, at most 256; one when fewer than 10)


def default_k(d_in: int) -> int:
    """Active latents per patch when ``--k`` is not given: ``d_in / 8``, between 4 and 32. 32 is the usual choice
    for wide towers (CLIP-L, 1024 wide); on a narrow layer it would make the code dense (half of the shapes
    model's 64 dimensions), so it scales down with the width."""
    return max(4, min(32, d_in // 8))
