"""The Scratchpad's own promises about generation and traces."""

from __future__ import annotations

import torch

from vsp_assert import Intervention, Scratchpad


def test_generation_never_emits_an_image_placeholder(tiny_sae, images):
    from vsp_assert.testing import tiny_llava

    loaded = tiny_llava(seed=0)  # a model of its own: its head is rigged below
    image_id = loaded.model.config.image_token_id
    with torch.no_grad():  # make <image> the top logit everywhere: a garbage model that would emit it
        head = loaded.model.lm_head.weight
        head[image_id] = head.abs().max() * 50 * torch.sign(head.sum(0))
    pad = Scratchpad(loaded, tiny_sae, max_new_tokens=3)
    trace = pad.run(images[0], "what color is the square ?")
    assert image_id not in trace.output_ids.tolist() and trace.n_tokens > 0
    # and the answer can be teacher-forced: interventions on it run
    result = pad.intervene(trace, [Intervention.ablate(1)])[0]
    assert 0.0 <= result.p_after <= 1.0
