"""Mistral 3 specifics beyond the family suite: each image keeps its own aspect ratio (its own patch grid); the
prompt holds its merged grid row by row, ``[IMG_BREAK]`` after each row and ``[IMG_END]`` last, which carry no patch
and are not image tokens of the map; image token (r, c) carries the 2×2 patch block (2r…2r+1, 2c…2c+1); the packed
sequence cannot be read without the forward's ``image_sizes``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsp_assert.errors import ModelError
from vsp_assert.testing.families import tiny_mistral3


@pytest.fixture(scope="module")
def mistral3():
    return tiny_mistral3()


def image(h, w):
    from PIL import Image

    return Image.fromarray((np.random.RandomState(2).rand(h, w, 3) * 255).astype("uint8"))


def test_rows_of_image_tokens_close_with_break_and_end(mistral3):
    adapter, tok = mistral3.adapter, mistral3.processor.tokenizer
    inputs = adapter.prepare([image(20, 40), image(64, 30)], ["describe the image", "what color is the square ?"])
    ids_break, ids_end = tok.convert_tokens_to_ids("[IMG_BREAK]"), tok.convert_tokens_to_ids("[IMG_END]")
    expected_grids = [(4, 8), (8, 4)]  # 20×40 → 16×32 pixels; 64×30 → 32×16 (multiples of 8, longest edge 32)
    for b, (h, w) in enumerate(expected_grids):
        pmap = adapter.patch_map(inputs, b)
        assert pmap.grid == (h, w) and pmap.n_patches == h * w
        ids = inputs["input_ids"][b][inputs["attention_mask"][b].bool()]
        start = int(torch.nonzero(ids == mistral3.model.config.image_token_id)[0])
        block = ids[start : start + (h // 2) * (w // 2 + 1)].tolist()
        rows = [block[r * (w // 2 + 1) : (r + 1) * (w // 2 + 1)] for r in range(h // 2)]
        closers = [row[-1] for row in rows]
        assert closers == [ids_break] * (h // 2 - 1) + [ids_end]
        m = pmap.dense()  # [h/2 · w/2, h·w]
        for g in range(m.shape[0]):
            r, c = divmod(g, w // 2)
            block_ids = sorted((2 * r + i) * w + 2 * c + j for i in (0, 1) for j in (0, 1))
            assert torch.nonzero(m[g]).flatten().tolist() == block_ids
            assert torch.allclose(m[g, block_ids], torch.full((4,), 0.25))


def test_the_packed_sequence_needs_the_forward_inputs(mistral3):
    with pytest.raises(ModelError, match="mistral3: the packed vision sequence needs the forward's image_sizes"):
        mistral3.adapter.patches_of(torch.zeros(1, 64, 32), 1)
