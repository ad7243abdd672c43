"""The shapes world: the embedded default VLM, its SAE, and the procedurally generated world it was trained on.

Real VLM weights cannot be downloaded everywhere, and a harness that diagnoses mechanisms must be checked on a
model whose mechanisms are *known*. This package ships both: a small but real ``LlavaForConditionalGeneration``
(CLIP vision tower + Llama LM, ~0.7 M parameters, word-level tokenizer, PIL image processor) trained by
:mod:`~vsp_assert.shapes.train` on 64×64 images of coloured shapes, and a TopK SAE trained by
:mod:`~vsp_assert.shapes.train_sae` on its last vision layer with latents labelled automatically from the
ground truth of every patch (:mod:`~vsp_assert.shapes.labelling`).

The world (:mod:`~vsp_assert.shapes.world`): shapes circle/square/triangle, colours red/green/blue/yellow,
backgrounds plain/stripes/dots/grid, 1–3 objects of varied position and size per scene; a frozen,
dict-serialisable :class:`Scene` renders itself deterministically and reports per-patch concept labels.
Questions (:mod:`~vsp_assert.shapes.questions`): colour of a shape, shape of a colour, presence yes/no, and a
terse colour question; the prompt is ``USER: <image>\\n{question} ASSISTANT:`` and answers are one word.

Three mechanisms are planted through the training labels (:mod:`~vsp_assert.shapes.mechanisms`), one per
failure mode of the VisualScratchpad paper — ``misleading_concept`` (stripes → "triangle"),
``unused_hidden_cue`` (dots co-occur with circles but are not used) and ``limited_alignment`` (the terse
phrasing never says "yellow") — each with trigger and control probes. :mod:`~vsp_assert.shapes.report`
measures all of it (``vsp-assert shapes report``).

Public names: :data:`MODEL_DIR`, :data:`SAE_DIR`, :class:`Scene`, :class:`ShapeSpec`, :func:`random_scene`,
:data:`SHAPES`, :data:`COLORS`, :data:`BACKGROUNDS`, :data:`CONCEPTS`, :class:`Question`, :data:`TEMPLATES`,
:func:`random_question`, :data:`MECHANISMS`, :class:`Mechanism`, :class:`Probe`, :func:`clean_examples`.
Heavy modules (model building, training, report) import torch/transformers and are imported on demand.
"""

from __future__ import annotations

from pathlib import Path

from vsp_assert.shapes.mechanisms import (
    MECHANISMS,
    Example,
    Mechanism,
    Probe,
    clean_examples,
    training_example,
)
from vsp_assert.shapes.questions import PROMPT_FORMAT, QTYPES, TEMPLATES, Question, random_question
from vsp_assert.shapes.world import (
    BACKGROUNDS,
    COLORS,
    CONCEPTS,
    GRID,
    HELDOUT_SEED_START,
    IMAGE_SIZE,
    PATCH_SIZE,
    SHAPES,
    Scene,
    ShapeSpec,
    random_scene,
)

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
#: The shipped model folder (``LlavaForConditionalGeneration.from_pretrained`` / ``AutoProcessor``).
MODEL_DIR = ARTIFACTS_DIR / "model"
#: The shipped SAE folder (SAELens format + ``vsp_assert.json`` sidecar + ``concepts.json``).
SAE_DIR = ARTIFACTS_DIR / "sae"

__all__ = [
    "ARTIFACTS_DIR",
    "BACKGROUNDS",
    "COLORS",
    "CONCEPTS",
    "GRID",
    "HELDOUT_SEED_START",
    "IMAGE_SIZE",
    "MECHANISMS",
    "MODEL_DIR",
    "PATCH_SIZE",
    "PROMPT_FORMAT",
    "QTYPES",
    "SAE_DIR",
    "SHAPES",
    "TEMPLATES",
    "Example",
    "Mechanism",
    "Probe",
    "Question",
    "Scene",
    "ShapeSpec",
    "clean_examples",
    "random_question",
    "random_scene",
    "training_example",
]
