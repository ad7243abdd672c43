"""Why did the answer flip? The concepts that carry the difference between an old answer and a new one.

When a model update changes an answer from ``old`` to ``new`` (a baseline that no longer holds, a case that
``vsp-assert compare`` lists as changed), :func:`explain_flip`:

1. attributes the new answer *against* the old one on the new model (contrastive attribution, see
   :mod:`vsp_assert.engine.attribution`): ``a_new[k]``, what each latent does for the margin
   ``log p(new) − log p(old)`` at the first output token where the two answers part;
2. when the old model is at hand too, attributes the old answer against the new one on it (``a_old[k]``, for the
   margin ``log p(old) − log p(new)``), so that ``Δ[k] = a_new[k] + a_old[k]`` is how much more latent ``k``
   pushes towards the new answer than it did before. The SAE reads the vision encoder, which an LM-side update
   leaves as it was, so the activations are the same on both models and the difference is how the LM reads them.
   Without the old model, ``Δ = a_new``;
3. sums over each labelled concept's latents that fire on the image and ranks the concepts by ``a_new`` (default,
   ``rank="new"``) or by ``Δ`` (``rank="change"``). The zoo of fine-tuned shortcuts chose the default
   (docs/truth.md): ranked by ``a_new`` the responsible concept came first on 0.49–0.97 of the flipped cases, by
   ``Δ`` on 0.35–0.97, never more often. Concepts with a positive share that push towards the new answer on the
   new model (``a_new > 0``) carry the flip; those whose ``Δ`` is positive but that still push towards the old
   answer are listed apart as *weakened* (the new model reads them less), since ablating them cannot bring the old
   answer back;
4. confirms the top ones by ablation on the new model, all in one batched intervention: "ablating stripes on the
   new model restores 'red'" when the answer goes back to the old one. The same batch has one more row, every
   latent that fires on the image ablated: where ablations drift (on the shapes model "yellow" for any colour
   question, "square" for any shape question; docs/truth.md): an ablation whose answer is that one may show the
   ablation's default rather than the concept's effect, which random controls tell apart;
5. when no ablation restores the old answer and the new answer survives every firing latent ablated, asks the
   model the same question about a blank image (the input's size, every pixel its median colour:
   :func:`~vsp_assert.engine.images.blank_like`), and the old model too when it is at hand — one generation each.
   If the new answer is also what the model says with the image's content gone, it is the model's *prior* for the
   question: the words carry it, not a concept (a shortcut learned from the question, such as "triangles are
   green" when the question says "triangle"; docs/truth.md). The sentence then says so: "the question alone gives
   'green': the new model answers it on a blank image, the old model 'yellow'". When the old model's blank answer
   is the same, the prior did not change; the new model falls back on it here. Both tests are needed: a blank image
   is itself a flat, bare scene, so a shortcut cued by bare background (the zoo's ``plain_circle``) answers it
   too — but that answer goes when the latents reading the bare patches are ablated.

The same explanation answers "why not the right answer?" for a failing case that names it (``correct:``, else
``equals:``): the right answer plays the old one, on one model (``model="this model"``), and the failure view
shows which concept's ablation brings it back. Plain data out (:class:`FlipExplanation`); the checks and the
renderers put it in the drift report, the compare table and the failure view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from vsp_assert.engine.trace import same_answer

if TYPE_CHECKING:
    from vsp_assert.engine.scratchpad import Scratchpad
    from vsp_assert.engine.trace import Trace


@dataclass
class Confirmation:
    """One concept ablated on the new model: the answer it gave, and whether that is the old answer again."""

    concept: str
    latents: list[int]
    answer_after: str
    restores: bool
    p_new_after: float
    model: str = "the new model"

    def sentence(self, old_answer: str) -> str:
        if self.restores:
            return f"ablating {self.concept} on {self.model} restores {old_answer!r}"
        return f"ablating {self.concept} on {self.model} gives {self.answer_after!r}"


@dataclass
class FlipExplanation:
    """Why ``old_answer`` became ``new_answer``: concepts ranked by their share (``concepts``:
    ``(name, share, firing latents)``; the share is what :func:`explain_flip`'s ``rank`` ranks by), the strongest
    latents by the same measure (``latents``: ``(id, share)``), and the ablations that
    checked the top concepts. ``both_models``: the old model's side was attributed too."""

    old_answer: str
    new_answer: str
    token: int
    concepts: list[tuple[str, float, list[int]]] = field(default_factory=list)
    weakened: list[tuple[str, float, list[int]]] = field(default_factory=list)
    latents: list[tuple[int, float]] = field(default_factory=list)
    confirmations: list[Confirmation] = field(default_factory=list)
    both_models: bool = False
    model: str = "the new model"
    all_ablated: str | None = None  # the answer with every latent that fires on the image ablated
    blank_answer: str | None = None  # this model's answer on a blank image (asked when no ablation restores)
    old_blank_answer: str | None = None  # the old model's answer on it (when the old model is at hand)

    @property
    def confirmed(self) -> list[Confirmation]:
        return [c for c in self.confirmations if c.restores]

    @property
    def prior(self) -> bool:
        """No ablation restores the old answer, the new one survives every firing latent ablated, and it is what
        the model answers on a blank image: the question's words carry it (step 5 of the module docstring)."""
        if self.confirmed or self.blank_answer is None or not same_answer(self.blank_answer, self.new_answer):
            return False
        return self.all_ablated is None or same_answer(self.all_ablated, self.new_answer)

    @property
    def responsible(self) -> str | None:
        """The concept the explanation names: the first confirmed one; None when the answer is the model's prior
        for the question (:attr:`prior`); else the top-ranked one."""
        if self.confirmed:
            return self.confirmed[0].concept
        if self.prior:
            return None
        return self.concepts[0][0] if self.concepts else None

    def prior_sentence(self) -> str:
        """What the blank image showed, when :attr:`prior` holds."""
        new, old_blank = self.new_answer, self.old_blank_answer
        if old_blank is not None and not same_answer(old_blank, new):
            return f"the question alone gives {new!r}: {self.model} answers it on a blank image, the old model " \
                   f"{old_blank!r}"
        if old_blank is not None:
            return f"no ablation restores {self.old_answer!r}; {new!r} is both models' answer on a blank image: " \
                   f"{self.model} falls back on it here"
        return f"no ablation restores {self.old_answer!r}; {self.model} answers {new!r} on a blank image too: its " \
               "prior for the question"

    def sentence(self) -> str:
        """One line for a table: the confirmed ablation (and the other concepts whose ablation restores too), else the
        question's prior (:attr:`prior`), else the top concepts and what ablating them gave."""
        if self.confirmed:
            first, *also = self.confirmed
            more = f" (so does ablating {' or '.join(c.concept for c in also)})" if also else ""
            return first.sentence(self.old_answer) + more
        if self.prior:
            return self.prior_sentence()
        if not self.concepts:
            return "no labelled concept carries the change"
        tops = ", ".join(f"{name} ({share:+.2f})" for name, share, _ in self.concepts[:3])
        tried = "; ".join(c.sentence(self.old_answer) for c in self.confirmations[:1])
        return f"carried by {tops}" + (f"; {tried}" if tried else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_answer": self.old_answer, "new_answer": self.new_answer, "token": self.token,
            "both_models": self.both_models, "responsible": self.responsible, "sentence": self.sentence(),
            "prior": self.prior, "blank_answer": self.blank_answer, "old_blank_answer": self.old_blank_answer,
            "concepts": [{"concept": n, "share": round(s, 4), "latents": ids} for n, s, ids in self.concepts],
            "weakened": [{"concept": n, "share": round(s, 4), "latents": ids} for n, s, ids in self.weakened],
            "latents": [[i, round(v, 4)] for i, v in self.latents], "all_ablated_answer": self.all_ablated,
            "confirmations": [{"concept": c.concept, "latents": c.latents, "answer_after": c.answer_after,
                               "restores": c.restores, "p_new_after": round(c.p_new_after, 4)}
                              for c in self.confirmations],
        }


def first_difference(pad: Scratchpad, trace: Trace, other: str) -> int:
    """The first output token of ``trace`` where its answer and ``other`` differ (0 when they never do)."""
    from vsp_assert.engine.attribution import contrast_ids

    ids = contrast_ids(pad, trace, other)
    for t in range(trace.n_tokens):
        if t >= len(ids) or int(ids[t]) != int(trace.output_ids[t]):
            return t
    return 0


def explain_flip(
    new_pad: Scratchpad,
    new_trace: Trace,
    old_answer: str,
    *,
    old_pad: Scratchpad | None = None,
    old_trace: Trace | None = None,
    top: int = 3,
    n_latents: int = 8,
    rank: str = "new",
    model: str = "the new model",
) -> FlipExplanation:
    """Explain why ``new_trace``'s answer is no longer ``old_answer`` (see the module docstring).

    ``old_pad`` / ``old_trace``: the old model and its trace of the same case (``old_trace`` is run on
    ``old_pad`` when only the pad is given). ``top``: concepts confirmed by ablation (one batched intervention).
    ``rank``: ``new`` ranks concepts by the new model's contrastive attribution, ``change`` by ``Δ``. ``model``:
    how the sentences name the model ablated ("this model" when explaining a failure against its right answer).
    """
    if rank not in ("new", "change"):
        from vsp_assert.errors import InputError

        raise InputError("unknown flip ranking", field="rank", received=rank, allowed="new, change")
    from vsp_assert.engine.analysis import everything_ablated
    from vsp_assert.engine.interventions import Intervention

    new_answer = new_trace.answer
    out = FlipExplanation(old_answer, new_answer, 0, model=model)
    if new_trace.n_tokens == 0 or same_answer(old_answer, new_answer):
        return out
    t = first_difference(new_pad, new_trace, old_answer)
    out.token = t
    now = new_trace.attribution_for(old_answer)[t].clone()  # [d_sae]: pushes towards new over old, now
    delta = now.clone()
    if old_pad is not None and old_trace is None and new_trace.image is not None:
        old_trace = old_pad.run(new_trace.image, new_trace.prompt)
    if old_pad is not None and old_trace is not None and old_trace.n_tokens \
            and same_answer(old_trace.answer, old_answer):
        t_old = min(first_difference(old_pad, old_trace, new_answer), old_trace.n_tokens - 1)
        delta += old_trace.attribution_for(new_answer)[t_old]  # pushed towards old over new, before
        out.both_models = True
    firing = new_trace.image_scores > 0  # [d_sae]
    shown = firing.clone()
    for i in new_trace.hidden:
        shown[int(i)] = False
    delta[~shown] = 0.0
    key = delta if rank == "change" else now.masked_fill(~shown, 0.0)
    order = torch.argsort(key, descending=True)
    out.latents = [(int(i), float(key[i])) for i in order[:n_latents] if float(key[i]) > 0]
    if new_trace.labels is not None:
        ranked = []
        for name, ids in new_trace.labels.concepts.items():
            live = [int(i) for i in ids if bool(firing[int(i)])]
            if live:
                ranked.append((name, float(delta[live].sum()), live, float(now[live].sum())))
        ranked.sort(key=lambda item: -item[1])
        out.weakened = [(n, d, ids) for n, d, ids, push in ranked if d > 0 and push <= 0]
        if rank == "new":
            ranked.sort(key=lambda item: -item[3])
            out.concepts = [(n, push, ids) for n, d, ids, push in ranked if push > 0]
        else:
            out.concepts = [(n, d, ids) for n, d, ids, push in ranked if d > 0 and push > 0]
    checks = out.concepts[:top]
    if checks:  # a checked concept fires, so the everything row exists
        everything = everything_ablated(new_trace)
        results = new_pad.intervene(new_trace, [*(Intervention.ablate(*ids) for _, _, ids in checks),
                                                *([everything] if everything is not None else [])])
        if everything is not None:
            out.all_ablated = results[len(checks)].answer_after
        for (name, _, ids), r in zip(checks, results):
            after = r.answer_after
            out.confirmations.append(Confirmation(name, ids, after, same_answer(after, old_answer), r.p_after, model))
    reads_image = out.all_ablated is not None and not same_answer(out.all_ablated, new_answer)
    if not out.confirmed and not reads_image and new_trace.image is not None:  # step 5: the question's prior?
        from vsp_assert.engine.images import blank_like

        blank = blank_like(new_trace.image)
        # an answer cut at max_new_tokens is compared with one cut at the same length; one that stopped, in full
        ended = new_trace.replay is None or new_trace.replay.ended
        budget = None if ended else new_trace.n_tokens
        out.blank_answer = new_pad.run(blank, new_trace.prompt, max_new_tokens=budget).answer
        if old_pad is not None:
            out.old_blank_answer = old_pad.run(blank, new_trace.prompt, max_new_tokens=budget).answer
    return out
