"""The Scratchpad: run a VLM on (image, prompt) and see it through an SAE.

This module owns the flow of one case through the model: preprocessing via the family adapter, one greedy
``generate`` during which a hook reads the SAE layer and the capturing attention records, per generated token,
the attention of the query that produced it; then the SAE encode and the attention-weighted scores (a
:class:`~vsp_assert.engine.trace.Trace`); and the batched interventions that re-enter the model at the hooked layer.

Every hook lives inside a ``with`` block (see :mod:`vsp_assert.engine.hooks`), so a case that raises leaves the model as
it found it. ``stats`` counts the model calls the Scratchpad makes (the structural tests read it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.engine.attention import AttentionRecorder, aggregate_attention, recording
from vsp_assert.engine.fit import sae_fit
from vsp_assert.engine.hooks import forward_hook, get_module, last_positions_only
from vsp_assert.engine.interventions import Intervention, InterventionResult, ResolvedIntervention, make_edit, resolve
from vsp_assert.engine.models import LoadedModel
from vsp_assert.engine.preprocess import ImageCache
from vsp_assert.engine.sae import SAE
from vsp_assert.engine.trace import Replay, Trace
from vsp_assert.engine.video import frame_labels, groups_by_kind, is_video, load_media, run_grouped
from vsp_assert.errors import InputError, SAEError


class Scratchpad:
    """Runs (image, prompt) pairs on ``model`` and explains the answers with ``sae``.

    Args:
        model: a :class:`~vsp_assert.engine.models.LoadedModel` (``load_model(...)``).
        sae: an :class:`~vsp_assert.engine.sae.SAE` on one of the model's vision layers (``load_sae(...)``).
        attention_layers: LM layers whose attention is averaged into ``Trace.attention`` (default: all).
        max_new_tokens: default generation length.
    """

    #: how per-layer attention becomes Trace.attention: "mass" or "layer" (vsp_assert.engine.attention.AGGREGATIONS)
    attention_aggregation: str = "mass"
    #: per LM layer, the heads averaged into Trace.attention (a layer not named keeps all heads)
    attention_heads: dict[int, list[int]] | None = None
    #: drop image tokens that take at least this share of a layer's image attention from every token and head
    attention_sink_share: float | None = None
    #: "layer" aggregation: leave out layers that put less than this share of a token's attention on the image
    attention_min_mass: float = 0.05

    def __init__(
        self,
        model: LoadedModel,
        sae: SAE,
        *,
        attention_layers: Sequence[int] | None = None,
        max_new_tokens: int = 8,
    ) -> None:
        self.loaded = model
        self.adapter = model.adapter
        hook_layer = sae.hook_layer or self.adapter.default_hook_layer()
        self.adapter.validate_hook_layer(hook_layer)
        self.hook_layer = hook_layer
        self.hook_module = get_module(model.model, hook_layer)
        width = self.adapter.vision_width()
        if sae.d_in != width:
            raise SAEError(
                f"the SAE reads d_in={sae.d_in} but the hooked layer '{hook_layer}' has width {width}",
                file=str(sae.path) if sae.path else None,
                field="d_in",
                received=sae.d_in,
                allowed=str(width),
                fix="use the SAE trained on this model's vision layer",
            )
        # beside the hooked layer (with device_map="auto" that need not be the device of the model's inputs)
        hook_params = next(self.hook_module.parameters(), None)
        self.sae = sae.to(hook_params.device if hook_params is not None else model.device)
        n_layers = self.adapter.lm_num_layers()
        layers = list(range(n_layers)) if attention_layers is None else list(attention_layers)
        bad = [i for i in layers if not isinstance(i, int) or not -n_layers <= i < n_layers]
        if bad or not layers:
            raise InputError("attention layers out of range", field="attention_layers", received=bad or layers,
                             allowed=f"LM layer indices 0..{n_layers - 1} (negative counts from the end)")
        self.layers = sorted({i % n_layers for i in layers})
        self.max_new_tokens = max_new_tokens
        self.stats: Counter[str] = Counter()
        #: preprocessed images, reused when another case asks about the same image (see vsp_assert.engine.preprocess)
        self.image_cache = ImageCache()
        #: intervention forwards compute the LM's last layer only where logits are read (switch off to compare)
        self.trim_last_layer = True
        #: leave the SAE's dead and dense latents out of rankings and heatmaps (see ConceptLabels.noise)
        self.filter_noise = True
        self._last_layer = self.adapter.lm_last_layer()

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def labels(self) -> Any:
        return self.sae.labels

    # ------------------------------------------------------------------ run
    def run(self, image: Any, prompt: str, *, max_new_tokens: int | None = None) -> Trace:
        """Answer ``prompt`` about ``image`` (path, PIL image or array) and return its :class:`Trace`."""
        return self.run_batch([image], [prompt], max_new_tokens=max_new_tokens)[0]

    def run_batch(
        self, images: Sequence[Any], prompts: Sequence[str], *, max_new_tokens: int | None = None
    ) -> list[Trace]:
        """Several (image, prompt) pairs in one batched ``generate``; same results as one by one."""
        if len(images) != len(prompts):
            raise InputError("images and prompts differ in number", received=(len(images), len(prompts)))
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise InputError("the prompt must be text", field="prompt", received=type(prompt).__name__,
                                 allowed="a str")
            if not prompt.strip():
                raise InputError("the prompt is empty", field="prompt", received=prompt,
                                 fix="write the question the model should answer")
        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if max_new < 1:
            raise InputError("max_new_tokens must be at least 1", field="max_new_tokens", received=max_new)
        pil = [load_media(img) for img in images]  # RGB PIL images, or Videos (engine/video.py)
        if len(groups := groups_by_kind(pil, self.adapter.batch_group)) > 1:  # one kind (frame count) per batch
            return run_grouped(groups, pil, prompts, lambda m, p: self.run_batch(m, p, max_new_tokens=max_new))
        if is_video(pil[0]):
            self.adapter.require_video()
        with self.image_cache.serving(self.adapter.processor):
            prepared = self.adapter.prepare(pil, list(prompts))  # on the CPU: layouts are read from here
        inputs = self._to_device(prepared)
        self._check_length(prepared, max_new)
        maps = [self.adapter.patch_map(prepared, b) for b in range(len(pil))]
        n_img = max(m.image_positions.numel() for m in maps)
        positions = torch.stack(
            [torch.nn.functional.pad(m.image_positions, (0, n_img - m.image_positions.numel())) for m in maps]
        ).to(self.loaded.device)  # [B, N_img], moved once: the attention reads it at every layer and step
        captured: dict[str, torch.Tensor] = {}

        def grab(hidden: torch.Tensor) -> None:  # [B, S, d_vision], once: the vision tower runs at prefill
            captured.setdefault("z", hidden.detach())

        recorder = AttentionRecorder(image_positions=positions, rows=1, layers=set(self.layers))
        with forward_hook(self.hook_module, grab), recording(recorder), torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new,
                do_sample=False,
                num_beams=1,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self._pad_id(),
                suppress_tokens=self.adapter.placeholder_token_ids() or None,
            )
        self.stats["generate"] += 1
        if "z" not in captured:
            raise SAEError(f"the hooked layer '{self.hook_layer}' never ran during generation",
                           field="hook_layer", received=self.hook_layer)
        records = recorder.stacked()  # [L_sel, steps, B, H, 1, N_img]
        logits = torch.stack(out.logits, dim=1).float()  # [B, steps, V]
        prompt_len = inputs["input_ids"].shape[1]
        traces = []
        for b in range(len(pil)):
            traces.append(
                self._trace(b, pil[b], prompts[b], prepared, maps[b], captured["z"], len(pil), records, logits,
                            out.sequences[b], prompt_len)
            )
        return traces

    def _new_trace(self, **fields: Any) -> Trace:
        """Build the trace of one run. The checks layer's Scratchpad overrides this to bind ``trace.assert_*``
        (see :mod:`vsp_assert.checks.fluent`); the engine's traces are plain data."""
        return Trace(**fields)

    def _trace(
        self,
        b: int,
        image: Any,
        prompt: str,
        inputs: dict[str, torch.Tensor],  # the batch's inputs on the CPU (the trace keeps its own element)
        pmap: PatchMap,
        z: torch.Tensor,  # the hooked layer's output ([B, S, d_vision] for LLaVA)
        z_batch: int,
        records: torch.Tensor,  # [L_sel, steps, B, H, 1, N_img]
        logits: torch.Tensor,  # [B, steps, V]
        sequence: torch.Tensor,  # [L_prompt + steps]
        prompt_len: int,
    ) -> Trace:
        tok = self.adapter.tokenizer
        eos = self.adapter.eos_token_ids()
        generated = sequence[prompt_len:].tolist()
        n = len(generated)
        for i, token_id in enumerate(generated):
            if token_id in eos:
                n = i
                break
        ended = n < len(generated)
        ids = torch.tensor(generated[:n], dtype=torch.long)
        probs = torch.softmax(logits[b, :n], dim=-1)  # [T, V]
        token_probs = probs.gather(1, ids[:, None].to(probs.device)).flatten().cpu()  # [T]
        # attention: query row of step t produced token t; mean over heads, restrict to this element's images
        n_img = pmap.image_positions.numel()
        agg = aggregate_attention(records[:, :n, b, :, 0, :n_img].float().cpu(), pmap.to_patches,  # [L, T, H, N]
                                  mode=self.attention_aggregation, layers=self.layers, heads=self.attention_heads,
                                  sink_share=self.attention_sink_share, min_mass=self.attention_min_mass)
        attention, by_layer = agg.attention, agg.by_layer  # [T, P], [L_sel, T, P]
        x = self.adapter.patches_of(z, z_batch, inputs)[b, : pmap.n_patches]  # [P, d_vision]
        if not bool(torch.isfinite(x).all()):
            raise InputError(
                f"the hooked layer '{self.hook_layer}' produced NaN/inf activations",
                field="image",
                fix="check the model's dtype (try float32) and the image preprocessing",
            )
        with torch.inference_mode():
            codes = self.sae.encode_sparse(x)  # [P, w] ids + values, encoded in tiles: never [P, d_sae]
            fit = sae_fit(self.sae, x, codes)
            acts = codes.to("cpu", torch.float32)
        scores = acts.weighted(attention)  # [T, d_sae]
        own_inputs = self.adapter.element_inputs(inputs, b)
        own_prompt_len = int(own_inputs["input_ids"].shape[1])
        return self._new_trace(
            prompt=prompt,
            answer=tok.decode(ids.tolist(), skip_special_tokens=True).strip(),
            output_tokens=[tok.decode([i]) for i in ids.tolist()],
            output_ids=ids,
            token_probs=token_probs,
            answer_prob=float(token_probs.prod()) if n else 1.0,
            sparse_acts=acts,
            attention=attention,
            attention_by_layer=by_layer,
            attention_mass=agg.mass,
            attention_sinks=agg.sinks,
            scores=scores,
            image_scores=acts.mean(),
            grid=pmap.grid,
            frames=frame_labels(pmap.views, pmap.frames_per_view, len(image)) if is_video(image) else (),
            layers=list(self.layers),
            image=image,
            labels=self.sae.labels,
            sae_fit=fit,
            hidden=self.sae.labels.noise if self.filter_noise else frozenset(),
            attributor=self.attribute,
            replay=Replay(
                inputs=own_inputs,
                sequence=torch.cat([own_inputs["input_ids"][0].cpu(), ids, torch.tensor(
                    [generated[n]] if ended else [], dtype=torch.long)]),
                prompt_len=own_prompt_len,
                ended=ended,
            ),
        )

    # ------------------------------------------------------------------ interventions
    def intervene(self, trace: Trace, interventions: Sequence[Intervention]) -> list[InterventionResult]:
        """Apply each intervention to ``trace``'s case; all of them in one batched teacher-forced forward."""
        if not interventions:
            return []
        replay = self._replay(trace)
        specs = [resolve(spec, self.sae.labels, trace.n_patches) for spec in interventions]
        k = len(specs)
        T = trace.n_tokens
        single = self.adapter.teacher_forced_inputs(dict(replay.inputs), trace.output_ids)  # CPU, [1, L + T]
        layout = self.adapter.intervention_inputs(single, k + 1)  # input_ids [K+1, L+T], extras; on the CPU
        batch = self._to_device(layout)
        teacher = batch["input_ids"]
        rows: list[ResolvedIntervention | None] = [None, *specs]
        # the hook reads the layout on the host (no sync); every row is a copy of this case
        edit = make_edit(self.sae, self.adapter, rows, layout, same_case=True, support=trace.sparse_acts)
        with forward_hook(self.hook_module, edit), self._read_only_last(T + 1), torch.inference_mode():
            out = self.model(
                **batch,
                attention_mask=torch.ones_like(teacher),
                logits_to_keep=T + 1,
            )
        self.stats["intervention_forward"] += 1
        logits = out.logits.float()  # [K+1, T+1, V]
        answer_ids = trace.output_ids.to(logits.device)  # [T]; the LM head's device (device_map="auto" may differ)
        logp = torch.log_softmax(logits, dim=-1)
        tok_logp = logp[:, :T].gather(2, answer_ids[None, :, None].expand(k + 1, T, 1))[..., 0]  # [K+1, T]
        p_answer = tok_logp.sum(1).exp().tolist()  # [K+1]
        token_p = tok_logp.exp().tolist()  # [K+1][T]
        greedy = logits.argmax(-1)  # [K+1, T+1]
        same = (greedy[:, :T] == answer_ids[None, :]).all(1)  # [K+1]
        if replay.ended:  # the original answer stopped: the patched one must stop at the same place
            eos = torch.tensor(sorted(self.adapter.eos_token_ids()), dtype=greedy.dtype, device=greedy.device)
            same &= torch.isin(greedy[:, T], eos)
        diverged = [r for r, kept in enumerate(same.tolist()) if r and not kept]
        results = [
            InterventionResult(
                intervention=spec.spec,
                latents=spec.latents.tolist(),
                answer_before=trace.answer,
                p_before=p_answer[0],
                p_after=p_answer[r],
                changed=r in diverged,
                token_p_after=token_p[r],
            )
            for r, spec in enumerate(specs, start=1)
        ]
        if diverged:
            # the new answers cost one more (batched) generate: only pay for it when someone reads one
            def generate_answers() -> None:
                answers = self._regenerate(trace, [rows[r] for r in diverged], diverged)
                for r in diverged:
                    results[r - 1]._answer_after = answers[r]

            for r in diverged:
                results[r - 1]._generate = generate_answers
        return results

    def attribute(self, trace: Trace, contrast: str | None = None) -> torch.Tensor:
        """``[T, d_sae]`` attribution of ``trace``'s output tokens to the SAE latents (contrastive against the
        answer ``contrast`` when given): one batched forward and backward, see :mod:`vsp_assert.engine.attribution`.
        ``trace.attribution`` calls this on first use and caches it."""
        from vsp_assert.engine.attribution import attribute

        return attribute(self, trace, contrast)

    def ablate(self, trace: Trace, *concepts: Any, patches: Sequence[int] | None = None) -> InterventionResult:
        """Ablate ``concepts`` (names, ``"#id"`` or ints) in ``trace``'s case: one intervention."""
        return self.intervene(trace, [Intervention.ablate(*concepts, patches=patches)])[0]

    def _regenerate(
        self,
        trace: Trace,
        specs: list[ResolvedIntervention | None],
        row_ids: list[int],
    ) -> dict[int, str]:
        """Greedy answers of the patched model for the rows whose teacher-forced argmax diverged."""
        n = len(specs)
        layout = self.adapter.intervention_inputs(dict(self._replay(trace).inputs), n)  # on the CPU, read by the hook
        extra = self._to_device(layout)
        ids = extra.pop("input_ids")
        edit = make_edit(self.sae, self.adapter, specs, layout, same_case=True, support=trace.sparse_acts)
        with forward_hook(self.hook_module, edit), torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max(self.max_new_tokens, trace.n_tokens + 1),
                do_sample=False,
                num_beams=1,
                pad_token_id=self._pad_id(),
                suppress_tokens=self.adapter.placeholder_token_ids() or None,
                **extra,
            )
        self.stats["intervention_generate"] += 1
        eos = self.adapter.eos_token_ids()
        tok = self.adapter.tokenizer
        answers = {}
        for j, r in enumerate(row_ids):
            gen = out[j, ids.shape[1]:].tolist()
            cut = next((i for i, t in enumerate(gen) if t in eos), len(gen))
            answers[r] = tok.decode(gen[:cut], skip_special_tokens=True).strip()
        return answers

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _replay(trace: Trace) -> Replay:
        if trace.replay is None:
            raise InputError("this trace has no replay record, so it cannot be re-run with interventions",
                             field="trace", fix="use a trace returned by Scratchpad.run")
        return trace.replay

    def _read_only_last(self, n: int) -> Any:
        """The teacher-forced forward reads the logits of its last ``n`` positions only: the LM's last layer
        computes just those (see :func:`vsp_assert.engine.hooks.last_positions_only`)."""
        if self.trim_last_layer and self._last_layer is not None:
            return last_positions_only(self._last_layer, n)
        return nullcontext()

    def _to_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device, dtype = self.loaded.device, self.loaded.dtype
        out = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device)
                if value.is_floating_point():
                    value = value.to(dtype)
            out[key] = value
        return out

    def _check_length(self, inputs: dict[str, torch.Tensor], max_new: int) -> None:
        limit, length = self.adapter.context_length(), int(inputs["input_ids"].shape[1])
        if limit is not None and length + max_new > limit:
            raise InputError(f"prompt ({length} tokens with the image) plus max_new_tokens={max_new} exceeds the "
                             f"model's context length {limit}", field="prompt", received=length,
                             allowed=f"at most {limit - max_new} prompt tokens",
                             fix="shorten the prompt or lower max_new_tokens")

    def _pad_id(self) -> int | None:
        tok = self.adapter.tokenizer
        pad = getattr(tok, "pad_token_id", None)
        if pad is None:
            eos = sorted(self.adapter.eos_token_ids())
            pad = eos[0] if eos else None
        return pad
