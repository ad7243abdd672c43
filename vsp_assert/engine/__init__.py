"""The engine: run a VLM on (image, prompt) and see the answer through an SAE.

It owns everything that touches the model: loading (:mod:`.models`), the family adapter contract
(:mod:`.adapter`), the SAE and its concept labels (:mod:`.sae`, :mod:`.labels`), hooks and attention capture
(:mod:`.hooks`, :mod:`.attention`), images and their preprocessing cache (:mod:`.images`, :mod:`.preprocess`),
the :class:`~.scratchpad.Scratchpad` that produces a :class:`~.trace.Trace` (plain data), batched interventions
(:mod:`.interventions`) and the analysis of a trace (:mod:`.analysis`: heatmap, clusters, sufficient sets).

The engine never imports the checks, the pytest plugin or the renderers: those sit above it.
"""
