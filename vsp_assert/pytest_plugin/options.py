"""The ``--vsp-*`` options: one table, resolved once per session into a :class:`VspConfig`.

Each option has a command-line flag and, where it makes sense, an ini twin in ``[tool.pytest.ini_options]``
(``vsp_model = "shapes"``). The command line beats the ini file, which beats the default. Values are plain
strings/ints/bools so the config can be shipped to pytest-xdist workers. This module imports neither torch nor
transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COLOR_CHOICES = ("auto", "yes", "no")


@dataclass(frozen=True)
class Option:
    name: str  # the part after --vsp-
    help: str
    kind: str = "str"  # str | int | float | flag | choice
    default: Any = None
    ini: bool = True
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return f"--vsp-{self.name}"

    @property
    def dest(self) -> str:
        return "vsp_" + self.name.replace("-", "_")

    @property
    def help_text(self) -> str:
        """The help line with its default, as ``pytest --help`` shows it."""
        default = "off" if self.kind == "flag" else ("none" if self.default is None else self.default)
        return f"{self.help} (default: {default})"

    @property
    def ini_type(self) -> str:
        """The ini type: ``bool`` for flags (``true``/``false``/``1``/``0``), ``string`` otherwise (ints and choices
        are checked by :meth:`VspConfig.from_pytest`, whose error names the allowed values)."""
        return "bool" if self.kind == "flag" else "string"

    def argparse_kwargs(self) -> dict[str, Any]:
        if self.kind == "flag":
            return {"action": "store_true"}
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        return {"metavar": self.name.split("-")[-1].upper()}


OPTIONS: tuple[Option, ...] = (
    Option("model", "VLM to test: a save_pretrained folder, a hub id available offline, or 'shapes'", default="shapes"),
    Option("sae", "SAE folder in the SAELens format (with vsp_assert.json sidecar), or 'shapes'", default="shapes"),
    Option("device", "torch device for model and SAE (cpu, cuda, cuda:1, …), auto to spread the model over all "
           "GPUs (device_map='auto'), or cuda-per-worker: xdist worker i on cuda:(i mod GPUs)", default="cpu"),
    Option("dtype", "model dtype", kind="choice", choices=("float32", "float16", "bfloat16"), default="float32"),
    Option("layers", "LM layers whose attention is averaged: 'all' or a comma list like 0,1,-1", default="all"),
    Option("top-k", "concepts per output token in 'attended' checks and heatmaps", kind="int", default=5),
    Option("max-new-tokens", "generation length of a case", kind="int", default=8),
    Option("color", "colour in failure reports: auto (TTY and no NO_COLOR), yes, no", kind="choice",
           choices=COLOR_CHOICES, default="auto"),
    Option("show", "print the heatmap view for passing cases too", kind="flag", default=False, ini=False),
    Option("debug", "show tracebacks from inside torch/transformers instead of one-line errors", kind="flag",
           default=False, ini=False),
    Option("update-baseline", "write/refresh concept baselines for the cases that run", kind="flag", default=False,
           ini=False),
    Option("report", "write a static HTML report of the cases into this folder", default=None),
    Option("min-sae-fit", "the SAE's explained variance at the hooked layer, on a case's image, below which the "
           "case errors: the SAE does not fit this model (an update changed the vision tower?)", kind="float",
           default=0.5),
    Option("keep-noise", "keep the SAE's dead and dense latents in rankings and heatmaps (filtered out by default)",
           kind="flag", default=False),
    Option("allow-outside-root", "let case images live outside the cases root folder", kind="flag", default=False),
)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class VspConfig:
    """Resolved option values: plain, frozen data (the session's state lives in
    :class:`~vsp_assert.pytest_plugin.session.VspSession`)."""

    model: str = "shapes"
    sae: str = "shapes"
    device: str = "cpu"
    dtype: str = "float32"
    layers: str = "all"
    top_k: int = 5
    max_new_tokens: int = 8
    color: str = "auto"
    show: bool = False
    debug: bool = False
    update_baseline: bool = False
    report: str | None = None
    min_sae_fit: float = 0.5
    keep_noise: bool = False
    allow_outside_root: bool = False

    @classmethod
    def from_pytest(cls, config: Any) -> VspConfig:
        import pytest

        values: dict[str, Any] = {}
        for opt in OPTIONS:
            value = config.getoption(opt.dest, default=None)
            if value in (None, False) and opt.ini:
                ini = config.getini(opt.dest)
                if ini not in (None, "", []):
                    value = ini
            if value is None:
                value = opt.default
            key = opt.dest[len("vsp_"):]
            try:
                if opt.kind == "int":
                    value = int(value)
                    if value < 1:
                        raise ValueError
                elif opt.kind == "float":
                    value = float(value)
                    if not -1e9 < value <= 1.0:
                        raise ValueError
                elif opt.kind == "flag":
                    value = _to_bool(value)
                elif opt.kind == "choice" and value not in opt.choices:
                    raise ValueError
            except (TypeError, ValueError):
                allowed = ", ".join(opt.choices) if opt.choices else \
                    ("a number up to 1" if opt.kind == "float" else "a positive integer")
                raise pytest.UsageError(
                    f"{opt.flag} / ini {opt.dest}: received {value!r}; allowed: {allowed}"
                ) from None
            values[key] = value
        return cls(**values)

    def attention_layers(self) -> list[int] | None:
        text = str(self.layers).strip().lower()
        if text in ("", "all"):
            return None
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            from vsp_assert.errors import VspError

            raise VspError("bad layer list", field="--vsp-layers", received=self.layers,
                           allowed="'all' or comma-separated integers like 0,1,-1") from None
