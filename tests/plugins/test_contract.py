"""The public adapter contract (``vsp_assert.testing.contract``) can fail: adapters broken on purpose — a map
shifted by one patch, a map whose image positions are off by one, a hook reading one patch too few — are caught
by the check that owns the promise, with a figure and a message; a sound adapter passes; the pytest helper
yields one test per check."""

from __future__ import annotations

import pytest
import torch
from vsp_assert.plugins.llava import LlavaAdapter

from vsp_assert.engine.adapter import PatchMap
from vsp_assert.engine.models import LoadedModel
from vsp_assert.testing import tiny_llava
from vsp_assert.testing.contract import (
    CHECK_NAMES,
    FIGURES,
    AdapterContractError,
    adapter_contract_tests,
    check_adapter,
)


class ShiftedMap(LlavaAdapter):
    """Image token i claims patch i + 1: still a bijection, so only the model's wiring can tell."""

    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        right = super().patch_map(inputs, index)
        return PatchMap(right.image_positions, torch.roll(right.token_to_patch, 1, dims=1), right.grid)


class ShiftedPositions(LlavaAdapter):
    """The image tokens placed one position later than the processor put them."""

    def patch_map(self, inputs: dict[str, torch.Tensor], index: int) -> PatchMap:
        right = super().patch_map(inputs, index)
        return PatchMap(right.image_positions + 1, right.token_to_patch, right.grid)


class DroppedPatch(LlavaAdapter):
    """Reads every patch token of the hooked layer but the last."""

    def patch_token_index(self, n_tokens: int) -> torch.Tensor:
        return super().patch_token_index(n_tokens)[:-1]


def with_adapter(cls: type[LlavaAdapter]) -> LoadedModel:
    loaded = tiny_llava()
    return LoadedModel(model=loaded.model, processor=loaded.processor, adapter=cls(loaded.model, loaded.processor),
                       name=f"tiny-llava/{cls.__name__}")


def test_a_sound_adapter_passes_and_reports_a_figure_per_check():
    report = check_adapter(tiny_llava(), checks=["hook_sees_every_patch", "map_matches_processor",
                                                 "map_follows_wiring", "noop_intervention_is_exact"])
    assert report.passed, str(report)
    assert [r.name for r in report.results] == ["hook_sees_every_patch", "map_matches_processor",
                                                "map_follows_wiring", "noop_intervention_is_exact"]
    assert all(r.figure == 0 for r in report.results)
    assert set(FIGURES) == set(CHECK_NAMES)
    report.raise_for_failures()  # nothing to raise


def test_a_map_shifted_by_one_patch_fails_the_wiring_check():
    report = check_adapter(with_adapter(ShiftedMap), checks=["map_matches_processor", "map_follows_wiring"])
    assert report["map_matches_processor"].passed  # a bijection in the right places: the processor cannot tell
    wiring = report["map_follows_wiring"]
    assert not wiring.passed and wiring.figure == 6  # every one of the six perturbed patches is misattributed
    assert "the LM embeddings that change are not the tokens the map names" in str(wiring)
    with pytest.raises(AdapterContractError, match="map_follows_wiring"):
        report.raise_for_failures()


def test_image_positions_off_by_one_fail_the_processor_check():
    result = check_adapter(with_adapter(ShiftedPositions), checks=["map_matches_processor"])["map_matches_processor"]
    assert not result.passed and result.figure > 0
    assert "are not the processor's image tokens" in result.problems[0]


def test_a_dropped_patch_fails_the_hook_check():
    with pytest.raises(AdapterContractError, match="hook_sees_every_patch"):
        check_adapter(with_adapter(DroppedPatch), checks=["hook_sees_every_patch"], raise_on_failure=True)


def test_the_pytest_helper_yields_one_failing_test_per_broken_check():
    test = adapter_contract_tests(lambda: with_adapter(ShiftedMap))
    (mark,) = [m for m in test.pytestmark if m.name == "parametrize"]  # type: ignore[attr-defined]
    assert mark.args == ("check", CHECK_NAMES)
    test("map_matches_processor")  # passes: returns
    with pytest.raises(pytest.fail.Exception, match="FAIL  map_follows_wiring"):
        test("map_follows_wiring")


def test_the_documented_example_runs():
    """docs/adapters.md, "Checking your adapter": its first example runs as written and passes."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "adapters.md").read_text()
    section = text[text.index("## Checking your adapter"):]
    example = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    namespace: dict = {}
    exec(compile(example, "docs/adapters.md", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["report"].passed
