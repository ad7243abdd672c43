"""Fast batched encoding and answering for the shapes model (training, report and tests share it).

This module owns the one place where (scene, question) pairs become model inputs without going through the
generic processor: prompts are tokenised once per distinct question text (the vocabulary is closed) and images
go through :func:`~vsp_assert.shapes.world.to_pixel_values`, which a test checks equal to the shipped
processor. Answers are one token, so answering is one forward pass: argmax of the logits at the last prompt
position. Sequences are right-padded and the last real position is gathered, so results do not depend on the
batch composition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerBase

from vsp_assert.shapes.questions import PROMPT_FORMAT
from vsp_assert.shapes.world import GRID, Scene, to_pixel_values

N_IMAGE_TOKENS = GRID * GRID  # 64 image tokens, one per patch (CLS dropped)


class PromptEncoder:
    """Tokenises prompts with the real tokenizer, caching per question text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_id = int(tokenizer.eos_token_id)
        self._encode = lru_cache(maxsize=4096)(self._encode_uncached)

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        expanded = text.replace("<image>", "<image>" * N_IMAGE_TOKENS)
        return tuple(self.tokenizer(expanded)["input_ids"])

    def prompt(self, question: str) -> tuple[int, ...]:
        """Token ids of ``USER: <image>×64\\n{question} ASSISTANT:`` (with ``<s>``)."""
        return self._encode(PROMPT_FORMAT.format(question=question))

    def word(self, word: str) -> int:
        """The id of a one-word answer."""
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"answer {word!r} is not one token: {ids}")
        return int(ids[0])

    def batch(
        self, questions: Sequence[str], answers: Sequence[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ``input_ids (B, T)``, ``attention_mask (B, T)`` and ``last (B,)``.

        ``last[b]`` is the position of the last prompt token (whose logits predict the answer). With
        ``answers`` the answer token and ``</s>`` are appended after the prompt (for teacher forcing).
        """
        seqs = []
        last = []
        for i, q in enumerate(questions):
            ids = list(self.prompt(q))
            last.append(len(ids) - 1)
            if answers is not None:
                ids += [self.word(answers[i]), self.eos_id]
            seqs.append(ids)
        t = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), t), self.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(seqs), t), dtype=torch.long)  # (B, T)
        for b, s in enumerate(seqs):
            input_ids[b, : len(s)] = torch.tensor(s)
            mask[b, : len(s)] = 1
        return input_ids, mask, torch.tensor(last, dtype=torch.long)


def pixel_values(scenes: Sequence[Scene]) -> torch.Tensor:
    """Rendered and normalised scenes ``(B, 3, 64, 64)`` float32."""
    return torch.from_numpy(to_pixel_values([s.render() for s in scenes]))


@torch.no_grad()
def answer_logits(
    model: LlavaForConditionalGeneration,
    enc: PromptEncoder,
    scenes: Sequence[Scene],
    questions: Sequence[str],
    *,
    batch_size: int = 128,
) -> torch.Tensor:
    """Next-token logits at the last prompt position, ``(N, vocab)`` float32."""
    out = []
    for i in range(0, len(scenes), batch_size):
        ids, mask, last = enc.batch(questions[i : i + batch_size])
        px = pixel_values(scenes[i : i + batch_size])
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=px).logits  # (B, T, V)
        out.append(logits[torch.arange(len(last)), last])  # (B, V)
    return torch.cat(out) if out else torch.zeros((0, len(enc.tokenizer)))


def answers(
    model: LlavaForConditionalGeneration,
    enc: PromptEncoder,
    scenes: Sequence[Scene],
    questions: Sequence[str],
    *,
    batch_size: int = 128,
) -> list[str]:
    """The model's one-word answers (greedy)."""
    logits = answer_logits(model, enc, scenes, questions, batch_size=batch_size)
    ids = logits.argmax(-1).tolist()
    return [str(enc.tokenizer.convert_ids_to_tokens(i)) for i in ids]


def resolve_module(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """The submodule at dotted ``path`` (e.g. ``model.vision_tower.encoder.layers.2``)."""
    return model.get_submodule(path)


@contextmanager
def edit_layer_output(
    model: torch.nn.Module, path: str, fn: Callable[[torch.Tensor], torch.Tensor | None]
) -> Iterator[None]:
    """Within the block, ``fn`` sees (and may replace) the output ``(B, 1 + P, d)`` of the module at ``path``."""

    def hook(_m: torch.nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor | None:
        return fn(out)

    # prepend: transformers 5 records ``hidden_states`` (what LLaVA projects) with a forward hook installed at
    # model init; ours must run first so that the recorded tensor is the edited one.
    handle = resolve_module(model, path).register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def layer_activations(
    model: LlavaForConditionalGeneration, path: str, scenes: Sequence[Scene], *, batch_size: int = 256
) -> torch.Tensor:
    """Patch-token outputs of the vision layer at ``path``: ``(N, 64, d_vision)`` float32 (CLS dropped)."""
    chunks: list[torch.Tensor] = []

    def grab(out: torch.Tensor) -> None:
        chunks.append(out[:, 1:].detach().clone())  # (B, P, d)

    tower = model.model.vision_tower
    with edit_layer_output(model, path, grab):
        for i in range(0, len(scenes), batch_size):
            tower(pixel_values(scenes[i : i + batch_size]))
    return torch.cat(chunks) if chunks else torch.zeros((0, N_IMAGE_TOKENS, 0))


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (and return a numpy generator) for a deterministic run."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
