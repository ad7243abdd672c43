"""``vsp-assert explore``: the VisualScratchpad interface, served locally, with "save as case".

The package owns the interactive explorer and nothing the rest of vsp-assert depends on: :mod:`.state` (the model,
the current image, trace and interventions, behind one lock), :mod:`.view` (what the page shows of a trace,
rendered by :mod:`vsp_assert.render`), :mod:`.server` (the Starlette app and the uvicorn server on 127.0.0.1),
:mod:`.page` and :mod:`.page_js` (the one self-contained page). It sits beside the CLI, on top of the engine, the
checks and the renderers; its web dependencies come with the optional ``explore`` extra
(``pip install "vsp-assert[explore]"``) and are imported only when the server starts. docs/explore.md is the
user's guide.
"""
