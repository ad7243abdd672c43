"""The record of one (image, prompt) run: what the model answered and which concepts it used.

A :class:`Trace` holds every array the assertions, the heatmap and the reports need, so rendering never re-runs
the model. All arrays are CPU float32 tensors; ``T`` is the number of output tokens (EOS excluded), ``P`` the
number of encoder patches the SAE reads, ``d_sae`` the SAE width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .assertions import AssertionRecord
    from .labels import ConceptLabels
    from .scratchpad import Scratchpad


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
        acts: ``[P, d_sae]`` — SAE latent activations ``f[p, k]`` per encoder patch at the hooked layer.
        attention: ``[T, P]`` — text-to-image attention ``A[t, p]`` of the query that produced token t, averaged
            over the chosen LM layers and all heads, restricted to image keys, mapped to patches; rows sum to 1.
        attention_by_layer: ``[L_sel, T, P]`` — the same before averaging over layers (rows sum to 1 each).
        scores: ``[T, d_sae]`` — attention-weighted concept scores ``s[t, k] = Σ_p A[t, p] f[p, k]``.
        image_scores: ``[d_sae]`` — unweighted image-level scores, the mean of ``f[p, k]`` over patches.
        grid: ``(rows, cols)`` of the patch grid (row-major patches).
        layers: the LM layers averaged into ``attention``.
        image: the RGB PIL image the model saw (before the processor).
    """

    prompt: str
    answer: str
    output_tokens: list[str]
    output_ids: torch.Tensor
    token_probs: torch.Tensor
    answer_prob: float
    acts: torch.Tensor
    attention: torch.Tensor
    attention_by_layer: torch.Tensor
    scores: torch.Tensor
    image_scores: torch.Tensor
    grid: tuple[int, int]
    layers: list[int]
    image: Any = None
    labels: ConceptLabels | None = None
    # what interventions need to re-enter the model (kept private to the engine)
    _inputs: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _sequence: torch.Tensor | None = field(default=None, repr=False)  # [L_prompt + T (+EOS)] long
    _prompt_len: int = field(default=0, repr=False)
    _scratchpad: Scratchpad | None = field(default=None, repr=False)
    records: list[AssertionRecord] = field(default_factory=list, repr=False)

    @property
    def n_tokens(self) -> int:
        return len(self.output_tokens)

    @property
    def n_patches(self) -> int:
        return int(self.acts.shape[0])

    def display(self, latent: int) -> str:
        """A latent's display name: ``"red#12"`` for a labelled latent, ``"#12"`` otherwise."""
        return self.labels.display(latent) if self.labels is not None else f"#{latent}"

    def token_index(self, token: str | int) -> int:
        """Index of an output token given as its text (first match, whitespace-insensitive) or an int."""
        from .errors import InputError

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

    def top_concepts(self, token: str | int, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` latents with the highest attention-weighted score for an output token: ``(id, score)``."""
        row = self.scores[self.token_index(token)]
        values, ids = torch.topk(row, k=min(k, row.numel()))
        return [(int(i), float(v)) for i, v in zip(ids, values) if float(v) > 0.0]

    def top_captured(self, k: int = 10) -> list[tuple[int, float]]:
        values, ids = torch.topk(self.image_scores, k=min(k, self.image_scores.numel()))
        return [(int(i), float(v)) for i, v in zip(ids, values) if float(v) > 0.0]

    # ------------------------------------------------------------------ fluent assertions (see assertions.py)
    def assert_answer(self, expected: str | None = None, *, contains: str | None = None,
                      one_of: list[str] | None = None, not_: str | None = None,
                      correct: str | None = None) -> Trace:
        """Assert the answer equals / contains / is one of / is not the given text (case-insensitive)."""
        __tracebackhide__ = True
        from .assertions import assert_answer

        return assert_answer(self, expected, contains=contains, one_of=one_of, not_=not_, correct=correct)

    def assert_captured(self, *concepts: Any, min_score: float | None = None, max_rank: int | None = None,
                        absent: bool = False) -> Trace:
        """Assert each concept is active in the vision encoder (image-level score or rank)."""
        __tracebackhide__ = True
        from .assertions import assert_captured

        return assert_captured(self, *concepts, min_score=min_score, max_rank=max_rank, absent=absent)

    def assert_attended(self, token: str | int, *concepts: Any, top_k: int = 5, absent: Any = ()) -> Trace:
        """Assert each concept is among ``token``'s top-k attention-weighted concepts (``absent``: is not)."""
        __tracebackhide__ = True
        from .assertions import assert_attended

        return assert_attended(self, token, *concepts, top_k=top_k, absent=tuple(absent))

    def assert_causal(self, *, ablate: Any = (), steer: dict[str, Any] | None = None, patches: Any = None,
                      changes: bool | None = None, answer: str | None = None,
                      min_drop: float | None = None) -> Any:
        """Ablate (or steer) concepts and assert the answer changes / stays / becomes ``answer`` / drops."""
        __tracebackhide__ = True
        from .assertions import assert_causal

        return assert_causal(self, ablate=list(ablate), steer=steer, patches=patches, changes=changes,
                             answer=answer, min_drop=min_drop)

    def assert_sufficient(self, token: str | int = 0, *, min_drop: float | None = None) -> Any:
        """Assert a small set of heatmap clusters exists whose ablation changes the answer."""
        __tracebackhide__ = True
        from .assertions import assert_sufficient

        return assert_sufficient(self, token, min_drop=min_drop)
