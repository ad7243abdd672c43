"""Forward hooks that never outlive their block.

Every hook vsp-assert puts on a model goes through :func:`forward_hook`, a context manager whose ``finally``
removes it, so a case that fails or raises (even ``KeyboardInterrupt``) leaves the model exactly as it found it.
Hooks are *prepended*: transformers installs its own output-recording hooks lazily on the first forward, and an
edit of a layer's output must be what those recorders (and the next layer) see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from vsp_assert.errors import ModelError, did_you_mean

HiddenEdit = Callable[[torch.Tensor], torch.Tensor | None]


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path``; a clear error with close paths when it does not exist."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        raise ModelError(
            f"the model has no module '{path}'",
            field="hook_layer",
            received=path,
            fix=did_you_mean(path, names) or "list candidates with [n for n, _ in model.named_modules()]",
        ) from None


def _split_output(output: Any) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """The hidden-state tensor of a layer's output and a function that rebuilds the output around a new one."""
    if isinstance(output, torch.Tensor):
        return output, lambda new: new
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0], lambda new: (new, *output[1:])
    if hasattr(output, "last_hidden_state"):
        def rebuild(new: torch.Tensor) -> Any:
            output.last_hidden_state = new
            return output

        return output.last_hidden_state, rebuild
    raise ModelError(f"cannot find the hidden state in a layer output of type {type(output).__name__}")


@contextmanager
def forward_hook(module: nn.Module, edit: HiddenEdit) -> Iterator[None]:
    """Call ``edit(hidden)`` on ``module``'s output hidden state for every forward inside the block.

    ``edit`` may return a replacement tensor (same shape) or ``None`` to leave the output unchanged.
    """

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        hidden, rebuild = _split_output(output)
        new = edit(hidden)
        return None if new is None else rebuild(new)

    handle = module.register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


def count_hooks(model: nn.Module) -> int:
    """Forward / pre-forward hooks currently attached anywhere in ``model`` that are *not* transformers' own
    output recorders. vsp-assert leaves this number as it found it after every case."""
    total = 0
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for fn in hooks.values():
                if getattr(fn, "__name__", "") == "output_capturing_hook":
                    continue
                total += 1
    return total


@contextmanager
def last_positions_only(layer: nn.Module, n: int) -> Iterator[None]:
    """Inside the block, ``layer`` (the LM's *last* decoder layer) computes its attention output projection and
    its MLP for the last ``n`` positions only; its output at every earlier position is zero.

    For forwards that read the logits of the last ``n`` positions and nothing else (a teacher-forced forward with
    ``logits_to_keep=n``): every earlier position of the last layer feeds no logit that is read, since the final
    norm and the LM head act per position. The layer's keys and values still cover the whole sequence, so
    the kept positions are computed exactly as in the full forward. Submodules that are absent or called
    without a positional hidden state are left alone. Shapes: ``[B, L, d]`` in, ``[B, n, d]`` computed,
    ``[B, L, d]`` out.
    """
    attn = getattr(layer, "self_attn", None)
    targets = [m for m in (getattr(attn, "o_proj", None), getattr(layer, "mlp", None)) if isinstance(m, nn.Module)]
    lengths: dict[int, int | None] = {}

    def pre(module: nn.Module, args: tuple[Any, ...]) -> Any:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] <= n:
            lengths[id(module)] = None
            return None
        lengths[id(module)] = int(x.shape[1])
        return (x[:, -n:].contiguous(), *args[1:])  # contiguous: MoE blocks .view() their input

    def pad(out: torch.Tensor, length: int) -> torch.Tensor:  # [B, n, d] → [B, L, d], zeros before the kept rows
        full = out.new_zeros(out.shape[0], length, *out.shape[2:])
        full[:, -n:] = out
        return full

    def post(module: nn.Module, _args: Any, out: Any) -> Any:
        length = lengths.pop(id(module), None)
        if length is None:
            return None
        if isinstance(out, torch.Tensor):
            return pad(out, length)
        if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):  # (hidden, router logits, …)
            return (pad(out[0], length), *out[1:])
        raise ModelError(f"{type(module).__name__} returned {type(out).__name__}; cannot restore its positions",
                         fix="set Scratchpad.trim_last_layer = False for this model")

    handles = []
    try:
        for module in targets:
            handles.append(module.register_forward_pre_hook(pre, prepend=True))
            handles.append(module.register_forward_hook(post, prepend=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
