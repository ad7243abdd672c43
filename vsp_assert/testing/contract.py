"""The adapter contract: what every VLM family's adapter must keep true, as a check an adapter's author runs.

An adapter (``docs/adapters.md``) tells the engine where a family keeps its image patches and image tokens.
If it is wrong, traces, heatmaps and ablations are silently wrong too, so the promises are checked against
ground truth the adapter does not control — the processor's token placement, the model's own wiring, eager
attention, the model's logits. This project runs the same check on every built-in family
(``tests/plugins/test_families.py``); a third-party adapter runs it on its own model::

    from vsp_assert.testing.contract import check_adapter

    report = check_adapter(load_model("my-org/my-vlm"))  # or any LoadedModel, e.g. a tiny random one
    print(report)                   # one line per check: pass/fail, the measured figure, what broke
    report.raise_for_failures()     # AdapterContractError naming every failed check

or, in a pytest module, one parametrised test per check::

    from vsp_assert.testing.contract import adapter_contract_tests

    test_my_adapter = adapter_contract_tests(lambda: load_model("my-org/my-vlm"))

The checks (:data:`CHECK_NAMES`, code in :mod:`vsp_assert.testing.contract_checks`): the hook sees every patch
(each a distinct row of the hooked output, read and written back exactly, unread rows reaching no patch token);
the token ↔ patch map agrees with the processor's placement and, perturbing patches at the fed layer, with the
model's wiring; captured attention equals eager ``output_attentions``; a no-op intervention is bit-identical;
an ablation changes logits only from the first image token on; trimming the LM's last layer is exact; batched
runs equal single runs; a shared image is preprocessed once. What differs by design between families (how many
patches one LM token carries, tokens that carry none) is declared with :class:`MapExpectations`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vsp_assert.engine.models import LoadedModel
from vsp_assert.engine.sae import SAE
from vsp_assert.testing.contract_checks import CHECKS
from vsp_assert.testing.contract_types import MapExpectations, Outcome

CHECK_NAMES: tuple[str, ...] = tuple(CHECKS)
DEFAULT_PROMPTS: tuple[str, ...] = ("what color is the square ?", "is there a red circle ?", "describe the image")


@dataclass(frozen=True)
class CheckResult:
    """One invariant: ``passed``, the measured ``figure`` (what it is: :data:`FIGURES`) and what broke."""

    name: str
    passed: bool
    figure: float
    problems: tuple[str, ...] = ()

    def __str__(self) -> str:
        mark = "pass" if self.passed else "FAIL"
        line = f"{mark}  {self.name:<34} {FIGURES[self.name]} = {self.figure:.4g}"
        return line + "".join(f"\n        - {p}" for p in self.problems)


#: what each check's figure measures (0 is perfect unless said)
FIGURES: dict[str, str] = {
    "hook_sees_every_patch": "patches not exactly one hooked row",
    "map_matches_processor": "image tokens misplaced or mis-weighted",
    "map_follows_wiring": "perturbed patches the map gets wrong",
    "attention_equals_eager": "max |captured − eager|",
    "noop_intervention_is_exact": "max |Δ logit|",
    "ablation_from_first_image_token": "max |Δ logit| before the image",
    "last_layer_trimming_exact": "max |Δ logit| trimmed vs full",
    "batched_equals_single": "max |batched − single|",
    "shared_image_preprocessed_once": "cache hits (1 expected)",
}


class AdapterContractError(AssertionError):
    """An adapter broke its contract; the message lists every failed check."""


@dataclass(frozen=True)
class ContractReport:
    """The results of :func:`check_adapter`, one :class:`CheckResult` per check run."""

    family: str
    results: tuple[CheckResult, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if not r.passed]

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"{name!r} was not run (ran: {', '.join(r.name for r in self.results)})")

    def __str__(self) -> str:
        head = f"adapter contract of {self.family}: {len(self.results) - len(self.failed)}/{len(self.results)} passed"
        return "\n".join([head, *map(str, self.results)])

    def raise_for_failures(self) -> None:
        if not self.passed:
            raise AdapterContractError(str(self))


class AdapterContract:
    """A loaded model with its adapter, a Scratchpad on ``sae`` and the inputs the checks use; :meth:`run` runs one
    check. ``sae``: default a random top-k SAE on the adapter's default hook layer. ``images``: at least two
    (default three random RGB images of different sizes); ``prompts``: one per image."""

    def __init__(self, loaded: LoadedModel, sae: SAE | None = None, *, images: Sequence[Any] | None = None,
                 prompts: Sequence[str] | None = None, expect: MapExpectations | None = None,
                 max_new_tokens: int = 3) -> None:
        from vsp_assert import Scratchpad
        from vsp_assert.engine.hooks import get_module
        from vsp_assert.errors import InputError
        from vsp_assert.testing import random_sae

        self.loaded = loaded
        self.adapter = loaded.adapter
        self.model = loaded.model
        self.images = list(images) if images is not None else _random_images()
        self.prompts = list(prompts) if prompts is not None else list(DEFAULT_PROMPTS[: len(self.images)])
        if len(self.images) < 2 or len(self.prompts) != len(self.images):
            raise InputError("the adapter contract needs at least two images and one prompt per image",
                             received=(len(self.images), len(self.prompts)))
        self.expect = expect or MapExpectations()
        if sae is None:
            sae = random_sae(self.adapter.vision_width(), 64, k=8, hook_layer=self.adapter.default_hook_layer())
        self.pad = Scratchpad(loaded, sae, max_new_tokens=max_new_tokens)
        #: the last vision layer whose output reaches the LM: wiring is probed there (after it, nothing mixes)
        self.fed_module = get_module(self.model, self.adapter.default_hook_layer())

    def run(self, name: str) -> CheckResult:
        """Run the check ``name`` (one of :data:`CHECK_NAMES`); an exception inside it is a failure."""
        if name not in CHECKS:
            from vsp_assert.errors import InputError

            raise InputError("no such contract check", field="check", received=name, allowed=", ".join(CHECKS))
        out = Outcome()
        try:
            CHECKS[name](self, out)
        except Exception as exc:  # an adapter that raises breaks the contract; say where
            out.figure = float("nan")
            out.problems.append(f"raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return CheckResult(name, not out.problems, out.figure, tuple(out.problems))

    def check(self, names: Sequence[str] | None = None) -> ContractReport:
        results = tuple(self.run(name) for name in (names or CHECK_NAMES))
        return ContractReport(self.adapter.family, results)


def _random_images() -> list[Any]:
    """Three random RGB images, square, wide and tall (40×40, 48×32, 30×64 pixels)."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(3)
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for h, w in ((40, 40), (32, 48), (64, 30))]


def check_adapter(loaded: LoadedModel, sae: SAE | None = None, *, images: Sequence[Any] | None = None,
                  prompts: Sequence[str] | None = None, expect: MapExpectations | None = None,
                  checks: Sequence[str] | None = None, raise_on_failure: bool = False) -> ContractReport:
    """Run the adapter contract (every check, or ``checks``) on ``loaded``; see the module docstring.

    Returns the :class:`ContractReport`; with ``raise_on_failure`` a failed check raises
    :class:`AdapterContractError` instead.
    """
    report = AdapterContract(loaded, sae, images=images, prompts=prompts, expect=expect).check(checks)
    if raise_on_failure:
        report.raise_for_failures()
    return report


def adapter_contract_tests(build: Callable[[], LoadedModel], *, sae: Callable[[LoadedModel], SAE] | None = None,
                           images: Sequence[Any] | None = None, prompts: Sequence[str] | None = None,
                           expect: MapExpectations | None = None) -> Callable[[str], None]:
    """A pytest test function parametrised over :data:`CHECK_NAMES`; assign it to a ``test_*`` name in a test
    module. ``build`` makes the model (called once, on the first check); ``sae`` makes an SAE for it."""
    import pytest

    made: dict[str, AdapterContract] = {}

    @pytest.mark.parametrize("check", CHECK_NAMES)
    def test_adapter_contract(check: str) -> None:
        if "contract" not in made:
            loaded = build()
            made["contract"] = AdapterContract(loaded, sae(loaded) if sae else None, images=images,
                                               prompts=prompts, expect=expect)
        result = made["contract"].run(check)
        if not result.passed:
            pytest.fail(str(result), pytrace=False)

    return test_adapter_contract
