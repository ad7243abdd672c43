"""Model-family adapters: the only place that knows how a VLM family is wired.

The engine is family-agnostic; an :class:`Adapter` answers the few questions that differ between families:

- how to build model inputs from (images, prompts) with the model's own processor and chat template;
- which vision-encoder layers exist, which one an SAE hooks by default, and whether a hooked layer can reach
  the language model at all;
- which tokens of that layer's output are image patches, and the patch grid;
- where the image tokens sit in the LM sequence and which encoder patch(es) each one carries (a
  :class:`PatchMap`: a bijection for LLaVA, many-to-one for families that merge patches);
- how to switch the LM's attention to the capturing implementation.

One family per module in ``plugins/`` (installed as ``vsp_assert.plugins``). Adapters come in one way only, the
entry-point group ``vsp_assert.adapters`` (the built-in families are entry points of this package, a third-party
family is one of its own package); the registry here refuses a second adapter for a ``model_type``. Families with
several views per image build on :mod:`vsp_assert.engine.views`; :mod:`vsp_assert.testing.contract` checks an
adapter against the model it serves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from vsp_assert.errors import ModelError

ENTRY_POINT_GROUP = "vsp_assert.adapters"


@dataclass(frozen=True)
class PatchMap:
    """How one batch element's image tokens in the LM relate to the encoder patches the SAE reads.

    - ``image_positions``: ``[N_img]`` long — LM sequence positions of the image tokens (after any padding);
    - ``token_to_patch``: ``[N_img, P]`` float — row i spreads image token i over the encoder patches it
      carries (one 1.0 for a bijection, 1/4 each for a 2×2 merge, all zeros for a token that carries no
      patch such as a CLS or newline token). Dense, or a sparse COO tensor where a dense one would be large
      (LLaVA-OneVision: thousands of tokens × thousands of patches, at most four entries a row); use
      :meth:`dense` to read it either way;
    - ``grid``: ``(rows, cols)`` of the patch grid, patches in row-major order (per view; ``views`` > 1 for
      tiled families, views stacked first).
    - ``frames_per_view``: for a video (:mod:`vsp_assert.engine.video`), the views are time slices of this many
      consecutive frames each (2 for Qwen2-VL's temporal patches, 1 where every frame is a view); 0 for an image.
    """

    image_positions: torch.Tensor
    token_to_patch: torch.Tensor
    grid: tuple[int, int]
    views: int = 1
    frames_per_view: int = 0

    @property
    def n_patches(self) -> int:
        return int(self.token_to_patch.shape[1])

    def dense(self) -> torch.Tensor:
        """``token_to_patch`` as a dense ``[N_img, P]`` tensor."""
        return self.token_to_patch.to_dense() if self.token_to_patch.is_sparse else self.token_to_patch

    def to_patches(self, token_attention: torch.Tensor) -> torch.Tensor:
        """Attention over image tokens ``[..., N_img]`` → attention over patches ``[..., P]``."""
        m = self.token_to_patch
        x = token_attention.to(m.dtype)
        if not m.is_sparse:
            return x @ m
        flat = x.reshape(-1, x.shape[-1])  # [R, N_img]
        out = torch.sparse.mm(m.t().coalesce(), flat.t()).t()  # [R, P]
        return out.reshape(*x.shape[:-1], m.shape[1])


class Adapter(ABC):
    """What the engine needs to know about one VLM family. Subclasses are small; see ``plugins/llava.py``."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    #: The vision keys of the inputs (``pixel_values`` …). When ``vision_once`` is true, a batch of
    #: interventions on one case runs the vision tower once on these (batch 1) and the hooked layer's output is
    #: expanded to the batch inside the hook: every layer before the hook is shared by all rows. Only for
    #: families whose layers after the hook and whose projector accept the larger batch (batch-first towers).
    vision_keys: ClassVar[tuple[str, ...]] = ("pixel_values",)
    vision_once: ClassVar[bool] = False
    #: whether :meth:`prepare` takes :class:`~vsp_assert.engine.video.Video` items (frames become views)
    supports_video: ClassVar[bool] = False

    def __init__(self, model: nn.Module, processor: Any) -> None:
        # Any: a family's model class is reached through attributes that transformers defines dynamically
        self.model: Any = model
        self.processor = processor

    # -------------------------------------------------------------- loading
    @classmethod
    @abstractmethod
    def load(cls, name_or_path: str, **from_pretrained_kwargs: Any) -> tuple[nn.Module, Any]:
        """Load (model, processor) for a checkpoint of this family."""

    # -------------------------------------------------------------- inputs
    @abstractmethod
    def prepare(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs for a batch of RGB PIL images and user prompts (chat template applied, left padding).
        Families with :attr:`supports_video` also take a batch of :class:`~vsp_assert.engine.video.Video` items
        (one kind per batch: the Scratchpad splits mixed batches)."""

    def batch_group(self, item: Any) -> Any:
        """Items with equal keys may share one batched forward: by default still images with still images and
        videos with videos (the tower runs once per kind). A family whose model stacks clips (LLaVA-OneVision)
        also keys videos by their frame count; the Scratchpad splits a batch by this key."""
        from vsp_assert.engine.video import is_video

        return is_video(item)

    def require_video(self) -> None:
        """Raise a :class:`ModelError` naming the families that take video, unless this one does."""
        if not self.supports_video:
            takes = sorted(t for t, cls in registered().items() if cls.supports_video)
            raise ModelError(f"{self.family} models take no video input", field="video", received=self.family,
                             allowed=", ".join(takes), fix="give one frame as the case's image, or use a model of a "
                                                           "family that takes video")

    # -------------------------------------------------------------- vision side
    @abstractmethod
    def vision_layer_paths(self) -> list[str]:
        """Dotted module paths of the vision encoder's layers, in order."""

    def default_hook_layer(self) -> str:
        """The layer an SAE reads when its sidecar names none: the last layer feeding the LM."""
        return self.vision_layer_paths()[self.fed_layer_index()]

    def fed_layer_index(self) -> int:
        """Index of the last encoder layer whose output reaches the LM (layers after it are unused)."""
        return len(self.vision_layer_paths()) - 1

    def validate_hook_layer(self, path: str) -> int:
        """The index of ``path`` among the vision layers; an error if it is not one or cannot reach the LM."""
        layers = self.vision_layer_paths()
        if path not in layers:
            from vsp_assert.errors import did_you_mean

            raise ModelError(
                f"'{path}' is not a vision-encoder layer of this {self.family} model",
                field="hook_layer",
                received=path,
                allowed=f"{layers[0]} … {layers[-1]}",
                fix=did_you_mean(path, layers) or "set hook_layer in the SAE's vsp_assert.json",
            )
        index = layers.index(path)
        fed = self.fed_layer_index()
        if index > fed:
            raise ModelError(
                f"hook layer {index} comes after the layer the LM reads (vision_feature_layer → layer {fed}); "
                "ablations there could not change the answer",
                field="hook_layer",
                received=path,
                allowed=f"layers 0..{fed}",
            )
        return index

    @abstractmethod
    def patch_token_index(self, n_tokens: int) -> torch.Tensor:
        """``[P]`` long: which tokens of the hooked layer's output ``[B, n_tokens, d]`` are image patches."""

    def patches_of(
        self, hidden: torch.Tensor, batch: int, inputs: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The image patches of the hooked layer's output, ``[B, P, d]``, for a batch of ``batch`` images.

        Default: a batch-first ``[B, S, d]`` output whose patch tokens are :meth:`patch_token_index`. Families
        whose vision layers run on packed ``[N, d]`` sequences or on several views per image override this and
        :meth:`with_patches`; they read the per-element layout (views, grids) from ``inputs`` (the model inputs of
        this forward) and, when it is not given, assume every element has the same layout (true for the K
        identical rows of a batched intervention). Elements with fewer patches are zero-padded up to ``P``.
        """
        return hidden[:, self.patch_token_index(hidden.shape[1]).to(hidden.device)]

    def with_patches(
        self, hidden: torch.Tensor, patches: torch.Tensor, inputs: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """A copy of the hooked layer's output with its patches replaced by ``patches [B, P, d]``."""
        new = hidden.clone()
        new[:, self.patch_token_index(hidden.shape[1]).to(hidden.device)] = patches.to(hidden.dtype)
        return new

    def element_inputs(self, inputs: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        """The inputs of batch element ``index`` alone, left padding removed (batch size 1)."""
        batch = inputs["input_ids"].shape[0]
        keep = inputs["attention_mask"][index].bool()
        out = {"input_ids": inputs["input_ids"][index][keep][None]}
        for key, value in inputs.items():
            if key in ("input_ids", "attention_mask") or not isinstance(value, torch.Tensor):
                continue
            if value.shape[:2] == inputs["input_ids"].shape:  # per-token inputs (token_type_ids, …): unpad too
                out[key] = value[index][keep][None]
            else:
                out[key] = value[index : index + 1] if value.shape[:1] == (batch,) else value
        return out

    def repeat_inputs(self, inputs: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        """``n`` copies of single-element inputs as one batch."""
        return {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in inputs.items()}

    def intervention_inputs(self, inputs: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        """The batch for ``n`` interventions on one case: :meth:`repeat_inputs`, except that with
        :attr:`vision_once` the vision inputs stay a single copy (the intervention hook expands the batch)."""
        if not self.vision_once:
            return self.repeat_inputs(inputs, n)
        vision = {k: v for k, v in inputs.items() if k in self.vision_keys}
        rest = self.repeat_inputs({k: v for k, v in inputs.items() if k not in self.vision_keys}, n)
        return {**rest, **vision}

    def teacher_forced_inputs(
        self, inputs: dict[str, torch.Tensor], answer_ids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Single-element inputs (no padding) with ``answer_ids [T]`` appended, for one teacher-forced forward.

        Default: ``input_ids`` grows by the answer and every other input is kept. Families with per-token inputs
        besides ``input_ids`` (PaliGemma's and Gemma 3's ``token_type_ids``) extend those too.
        """
        out = dict(inputs)
        ids = inputs["input_ids"]  # [1, L]
        out["input_ids"] = torch.cat([ids, answer_ids.to(ids.device, ids.dtype)[None]], dim=1)  # [1, L + T]
        return out

    def vision_width(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    # -------------------------------------------------------------- LM side
    @abstractmethod
    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        """The :class:`PatchMap` of batch element ``index`` of ``inputs``."""

    def lm_num_layers(self) -> int:
        return int(self.model.config.text_config.num_hidden_layers)

    def lm_last_layer(self) -> nn.Module | None:
        """The language model's last decoder layer (None when it cannot be found): the ``layers`` list of the
        model's ``language_model`` / ``text_model`` with ``lm_num_layers`` entries."""
        n = self.lm_num_layers()
        for name, module in self.model.named_modules():
            if (name.endswith(("language_model.layers", "text_model.layers")) and isinstance(module, nn.ModuleList)
                    and len(module) == n):
                return module[n - 1]
        return None

    def context_length(self) -> int | None:
        return getattr(self.model.config.text_config, "max_position_embeddings", None)

    def install_attention_capture(self) -> None:
        """Switch the language model to the capturing attention implementation (sdpa underneath)."""
        from vsp_assert.engine.attention import register

        name = register()
        self.model.set_attn_implementation({"text_config": name})

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        gen = getattr(self.model, "generation_config", None)
        for source in (getattr(gen, "eos_token_id", None), getattr(self.tokenizer, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, (list, tuple)):
                ids.update(int(x) for x in source)
        return ids

    def placeholder_token_ids(self) -> list[int]:
        """Image/video placeholder tokens: never a word of an answer, so generation never emits them (a
        generated placeholder would make the answer unreadable and its teacher-forced forward invalid)."""
        ids: set[int] = set()
        configs = [self.model.config, getattr(self.model.config, "text_config", None)]
        for config in configs:
            for name in ("image_token_id", "image_token_index", "video_token_id", "video_token_index"):
                value = getattr(config, name, None)
                if isinstance(value, int) and value >= 0:
                    ids.add(value)
        return sorted(ids)


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Adapter]] = {}
_ENTRY_POINTS_LOADED = False


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Register an adapter class for its ``model_types``; a model type can have only one adapter."""
    for model_type in cls.model_types:
        existing = _REGISTRY.get(model_type)
        if existing is not None and existing is not cls:
            raise ModelError(
                f"model_type '{model_type}' already has an adapter ({existing.__module__}.{existing.__qualname__})",
                received=f"{cls.__module__}.{cls.__qualname__}",
                fix="unregister the other adapter or give yours another model_type",
            )
        _REGISTRY[model_type] = cls
    return cls


def _load_entry_points() -> None:
    """Register every adapter of the ``vsp_assert.adapters`` entry-point group, once.

    This is the only way adapters come in: the built-in families are entry points of this package (see
    pyproject.toml), exactly as a third-party family would be.
    """
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise ModelError(f"entry point '{ep.name}' of '{ENTRY_POINT_GROUP}' is not an Adapter subclass",
                             received=ep.value,
                             fix="point it at a class derived from vsp_assert.engine.adapter.Adapter")
        if cls not in _REGISTRY.values():
            register_adapter(cls)


def adapter_for(model_type: str) -> type[Adapter]:
    """The adapter class registered for a transformers ``model_type``."""
    _load_entry_points()
    if model_type not in _REGISTRY:
        raise ModelError(
            f"no adapter supports model_type '{model_type}'",
            received=model_type,
            allowed=", ".join(sorted(_REGISTRY)),
            fix=f"add an adapter (docs/adapters.md) and register it under the '{ENTRY_POINT_GROUP}' entry point",
        )
    return _REGISTRY[model_type]


def registered() -> dict[str, type[Adapter]]:
    _load_entry_points()
    return dict(_REGISTRY)
