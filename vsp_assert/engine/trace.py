"""The record of one (image, prompt) run: what the model answered and which concepts it used.

A :class:`Trace` holds every array the assertions, the heatmap and the reports need, so rendering never re-runs
the model. All arrays are CPU float32 tensors; ``T`` is the number of output tokens (EOS excluded), ``P`` the
number of encoder patches the SAE reads, ``d_sae`` the SAE width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vsp_assert.engine.labels import ConceptLabels
    from vsp_assert.engine.sparse import SparseActs


def normalise_answer(text: str) -> str:
    """The form answers are compared in: lower case, runs of whitespace collapsed, ends stripped."""
    return " ".join(str(text).lower().split())


def same_answer(a: str, b: str) -> bool:
    """Whether two answers count as the same (the one rule for assertions, baselines, compare and flip
    explanations)."""
    return normalise_answer(a) == normalise_answer(b)


def top_k(row: torch.Tensor, k: int, hidden: Iterable[int] = ()) -> list[tuple[int, float]]:
    """The ``k`` largest entries of a ``[d_sae]`` score row as ``(latent, score)``, strongest first; latents
    that score 0 (inactive) and the ``hidden`` ones (noise: dead or dense latents) are left out. The one ranking
    rule behind every top-k in vsp-assert."""
    drop = sorted(hidden)
    if drop:
        row = row.clone()
        row[torch.tensor(drop, dtype=torch.long)] = 0.0
    values, ids = torch.topk(row, k=min(k, row.numel()))
    return [(int(i), float(v)) for i, v in zip(ids, values) if float(v) > 0.0]


@dataclass(frozen=True)
class Replay:
    """What the engine needs to re-enter the model for this trace's case (interventions, re-derivations).

    Attributes:
        inputs: the processor's inputs of this one case, on the CPU (``input_ids [1, L]``, ``pixel_values`` …).
        sequence: ``[L + T (+1)]`` long — the prompt ids, the answer ids and, when the answer stopped, its EOS.
        prompt_len: ``L``, the prompt length in tokens (image tokens included); output token ``t`` was produced
            by the query at position ``L - 1 + t``.
        ended: whether the answer stopped with an EOS token (rather than at ``max_new_tokens``): a patched
            answer then has to stop at the same place to count as the same answer.
    """

    inputs: dict[str, torch.Tensor]
    sequence: torch.Tensor
    prompt_len: int
    ended: bool = False


@dataclass
class Trace:
    """One run of a VLM on (image, prompt), seen through an SAE.

    Attributes:
        prompt: the user prompt (before the chat template).
        answer: the greedy answer, decoded, special tokens removed, stripped.
        output_tokens: the answer's tokens as text, ``T`` of them (EOS excluded).
        output_ids: ``[T]`` long — their token ids.
        token_probs: ``[T]`` — probability of each output token when it was generated.
        answer_prob: product of ``token_probs`` (probability of the whole answer, greedy path).
        sparse_acts: SAE latent activations ``f[p, k]`` per encoder patch at the hooked layer, as what fired
            (:class:`~vsp_assert.engine.sparse.SparseActs`: ``[P, w]`` latent ids and values, w = k for a TopK
            SAE), so a trace's size does not grow with the SAE's width. ``acts`` is the dense ``[P, d_sae]``.
        attention: ``[T, P]`` — text-to-image attention ``A[t, p]`` of the query that produced token t, averaged
            over the chosen LM layers and all heads, restricted to image keys, mapped to patches; rows sum to 1.
        attention_by_layer: ``[L_sel, T, P]`` — the same before averaging over layers (rows sum to 1 each).
        scores: ``[T, d_sae]`` — attention-weighted concept scores ``s[t, k] = Σ_p A[t, p] f[p, k]``.
        image_scores: ``[d_sae]`` — unweighted image-level scores, the mean of ``f[p, k]`` over patches.
        grid: ``(rows, cols)`` of the patch grid (row-major patches; per view when there are several).
        layers: the LM layers averaged into ``attention``.
        image: the RGB PIL image the model saw (before the processor), or the
            :class:`~vsp_assert.engine.video.Video` for a video case.
        frames: for a video, one name per time slice ("frames 1–2"); patch ``p`` is then (slice
            ``p // (rows·cols)``, row, col). Empty for a still image.
    """

    prompt: str
    answer: str
    output_tokens: list[str]
    output_ids: torch.Tensor
    token_probs: torch.Tensor
    answer_prob: float
    sparse_acts: SparseActs
    attention: torch.Tensor
    attention_by_layer: torch.Tensor
    scores: torch.Tensor
    image_scores: torch.Tensor
    grid: tuple[int, int]
    layers: list[int]
    image: Any = None
    frames: tuple[str, ...] = ()
    labels: ConceptLabels | None = None
    #: the SAE's explained variance on this image's patches at the hooked layer (see vsp_assert.engine.fit)
    sae_fit: float | None = None
    #: latents left out of rankings and heatmaps: the SAE's dead and dense ones (VisualScratchpad's noise
    #: filter; ``Scratchpad.filter_noise = False`` keeps them). A check that names one still sees it.
    hidden: frozenset[int] = frozenset()
    #: how the engine re-enters the model for this case (None for a trace built by hand)
    replay: Replay | None = field(default=None, repr=False, compare=False)
    #: ``[L_sel, T]``: the share of each chosen layer's attention that went to the image (None: not recorded)
    attention_mass: torch.Tensor | None = None
    #: patches dropped from the attention as sinks (see Scratchpad.attention_sink_share)
    attention_sinks: tuple[int, ...] = ()
    #: computes an attribution ``[T, d_sae]`` (arg: the contrast answer or None); set by the Scratchpad, see
    #: vsp_assert.engine.attribution. Results are cached per contrast in ``attributions``.
    attributor: Callable[[Trace, str | None], torch.Tensor] | None = field(default=None, repr=False, compare=False)
    attributions: dict[str | None, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def attribution(self) -> torch.Tensor:
        """``[T, d_sae]``: per output token, the first-order effect of ablating each latent on that token's
        log-probability (gradient × activation through the SAE, error term kept; one batched backward, computed
        on first use). See :mod:`vsp_assert.engine.attribution`."""
        return self.attribution_for(None)

    def attribution_for(self, contrast: str | None = None) -> torch.Tensor:
        """The attribution, contrastive against the answer ``contrast`` (a case's ``correct:``) when given."""
        key = None if contrast is None else " ".join(str(contrast).split())
        if key not in self.attributions:
            if self.attributor is None:
                from vsp_assert.errors import InputError

                raise InputError("this trace cannot compute an attribution (no Scratchpad made it)",
                                 field="trace", fix="use a trace returned by Scratchpad.run")
            self.attributions[key] = self.attributor(self, key)
        return self.attributions[key]

    @property
    def can_attribute(self) -> bool:
        """Whether :attr:`attribution` is available (computed already, or computable)."""
        return self.attributor is not None or None in self.attributions

    def top_attributed(self, token: str | int, k: int = 5, *, contrast: str | None = None,
                       keep: Iterable[int] = ()) -> list[tuple[int, float]]:
        """The ``k`` latents that most support an output token by attribution: ``(id, attribution)``, strongest
        first (only positive ones; noise left out but ``keep``), as :meth:`top_concepts` does for attention."""
        row = self.attribution_for(contrast)[self.token_index(token)]
        return top_k(row, k, self.hidden.difference(keep))

    @property
    def n_tokens(self) -> int:
        return len(self.output_tokens)

    @property
    def n_patches(self) -> int:
        return self.sparse_acts.n_patches

    @property
    def acts(self) -> torch.Tensor:
        """``f [P, d_sae]``, dense, built from ``sparse_acts`` on each access (P × d_sae × 4 bytes: 151 MB for
        576 patches of a 65,536-latent SAE). Prefer ``sparse_acts.columns(ids)`` for a few latents."""
        return self.sparse_acts.dense()

    def patch_label(self, patch: int) -> str:
        """Where patch ``patch`` is: ``"row 2, col 5"``, prefixed by its view (``"frames 3–4, row 2, col 5"`` for a
        video, ``"view 2, …"`` for a tiled image)."""
        rows, cols = self.grid
        view, cell = divmod(int(patch), rows * cols)
        where = f"row {cell // cols}, col {cell % cols}"
        if self.frames:
            return f"{self.frames[view] if view < len(self.frames) else f'slice {view}'}, {where}"
        return f"view {view}, {where}" if self.n_patches > rows * cols else where

    def display(self, latent: int) -> str:
        """A latent's display name: ``"red#12"`` for a labelled latent, ``"#12"`` otherwise."""
        return self.labels.display(latent) if self.labels is not None else f"#{latent}"

    def token_index(self, token: str | int) -> int:
        """Index of an output token given as its text (first match, whitespace-insensitive) or an int."""
        from vsp_assert.errors import InputError

        if isinstance(token, bool):
            raise InputError("token must be text or an index", field="token", received=token)
        if isinstance(token, int):
            if -self.n_tokens <= token < self.n_tokens:
                return token % self.n_tokens
            raise InputError(f"output token index {token} is out of range", field="token", received=token,
                             allowed=f"0..{self.n_tokens - 1} (answer {self.answer!r})")
        wanted = str(token).strip().lower()
        for i, text in enumerate(self.output_tokens):
            if text.strip().lower() == wanted:
                return i
        raise InputError(
            f"the answer has no output token {token!r}",
            field="token",
            received=token,
            allowed=", ".join(repr(t) for t in self.output_tokens) + f" (answer {self.answer!r}) or an index",
        )

    def resolve(self, concepts: Any) -> list[int]:
        assert self.labels is not None
        return self.labels.resolve_many(concepts)

    def top_concepts(self, token: str | int, k: int = 5, *, keep: Iterable[int] = ()) -> list[tuple[int, float]]:
        """The ``k`` latents with the highest attention-weighted score for an output token: ``(id, score)``.
        Hidden (noise) latents are left out, except those in ``keep`` (latents a check names explicitly)."""
        return top_k(self.scores[self.token_index(token)], k, self.hidden.difference(keep))

    def top_captured(self, k: int = 10, *, keep: Iterable[int] = ()) -> list[tuple[int, float]]:
        """The ``k`` latents with the highest image-level score: ``(id, score)`` (noise left out but ``keep``)."""
        return top_k(self.image_scores, k, self.hidden.difference(keep))
