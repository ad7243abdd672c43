"""The data the adapter-contract checks share: what a family's map is expected to look like
(:class:`MapExpectations`), what a check reads (:class:`Subject`) and what it measured (:class:`Outcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from vsp_assert.engine.adapter import Adapter
    from vsp_assert.engine.models import LoadedModel


@dataclass(frozen=True)
class MapExpectations:
    """The shape of a family's token ↔ patch map beyond the rules every map keeps (a distribution per token).

    - ``patches_per_token``: every patch-carrying token carries exactly this many patches (1: a bijection;
      4: Qwen's 2×2 merge; None: not checked);
    - ``max_patches_per_token``: at most this many (bilinear resampling: 4);
    - ``shared_patches``: a patch may reach the LM through several tokens (resampling);
    - ``empty_tokens``: the family has image tokens that carry no patch (CLS under ``full``, image-newline
      tokens) — then at least one must exist; otherwise every image token carries a patch;
    - ``every_patch_reaches``: every patch reaches the LM through some token (not under downsampling).
    """

    patches_per_token: int | None = 1
    max_patches_per_token: int | None = None
    shared_patches: bool = False
    empty_tokens: bool = False
    every_patch_reaches: bool = True


class Subject(Protocol):
    """What a check reads (an :class:`~vsp_assert.testing.contract.AdapterContract` provides it)."""

    loaded: LoadedModel
    adapter: Adapter
    model: Any  # the transformers model
    images: list[Any]
    prompts: list[str]
    expect: MapExpectations
    pad: Any  # a Scratchpad on the contract's SAE
    fed_module: torch.nn.Module


@dataclass
class Outcome:
    """What one check measured (``figure``) and what it found broken (``problems``; none: passed)."""

    figure: float = 0.0
    problems: list[str] = field(default_factory=list)

    def require(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)
