"""Fixtures for the plugin tests: throwaway pytest sessions configured to load the saved tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def vsp(pytester: pytest.Pytester, saved):
    """A pytester with the saved model configured through the ini file, plus helpers."""
    pytester.makeini(
        f"""
        [pytest]
        vsp_model = {saved['model']}
        vsp_sae = {saved['sae']}
        vsp_max_new_tokens = 3
        """
    )
    Path(pytester.path / "img.png").write_bytes(Path(saved["image"]).read_bytes())
    return pytester
