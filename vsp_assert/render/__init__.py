"""Rendering: turn recorded traces and assertion results into text (terminal) and HTML (reports).

Rendering never runs the model: it reads :class:`~vsp_assert.engine.trace.Trace` objects and assertion records.
"""
