"""Concepts for a real model: where a model's concept vocabulary comes from.

This package owns the path from a user's images to an SAE and its labelled latents (see DESIGN.md, "Concepts
for a real model"):

- :mod:`~vsp_assert.concepts.sources` — the one reader of image sources (a folder, an ImageFolder tree, a JSONL or
  CSV manifest with labels and masks) that ``sae train``, ``concepts build`` and dataset suites share;
- :mod:`~vsp_assert.concepts.activations` — activations at the hooked vision layer, streamed through the family
  adapter's own preprocessing (the LM never runs), and the bounded shuffle buffer the trainer draws from;
- :mod:`~vsp_assert.concepts.train` — the TopK SAE trainer (aux-k, unit-norm decoder, resumable checkpoints),
  whose training step the shipped shapes SAE recipe also runs.
"""
