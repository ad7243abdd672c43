"""The schema of dataset cases: a case run over the rows of an image source, its per-row checks with rates, and
the random controls of its causal checks, as frozen data.

A :class:`DatasetCase` is a :class:`~vsp_assert.checks.schema.Case` (so collection, marks and ids treat it like
any case) whose ``prompt`` and ``expect`` may hold ``{field}`` templates, filled from each :class:`Row`'s fields.
Its :attr:`DatasetCase.checks` list every check of ``expect`` once, as a :class:`RowCheck`: the (templated) spec,
the rate bounds that turn it into an aggregate over the rows (none: every row must pass), and the
:class:`ControlSpec` of a causal check with ``control: random``. The loader (:mod:`.load_dataset`) builds these;
:mod:`.dataset` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vsp_assert.checks.schema import Case, Where

#: default number of random latent sets per controlled causal check
DEFAULT_CONTROLS = 8
#: default relative tolerance on a control set's activation mass (vs the claimed set's)
DEFAULT_MASS_TOLERANCE = 0.25
#: default number of worst rows a failure shows (thumbnail + heatmap each)
DEFAULT_SHOW_ROWS = 3
#: rows per batched generate
DEFAULT_BATCH = 32
#: one-sided p-value below which a target's rate counts as above its controls' (``specific: true``)
SPECIFIC_ALPHA = 0.05


@dataclass(frozen=True)
class Row:
    """One row of a source: its image (a resolved path or ``{"scene": {...}}``), its fields (what ``{field}``
    templates read) and where it came from (``rows.jsonl:7``, ``scene 12``)."""

    index: int
    image: str | dict[str, Any]
    fields: dict[str, Any]
    where: str

    def label(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in list(self.fields.items())[:4])
        return f"row {self.index} ({self.where}{'; ' + shown if shown else ''})"


@dataclass(frozen=True)
class ControlSpec:
    """``control: random``: ``n`` random latent sets, each the claimed set's size, drawn from the latents active
    on the row's image, with activation mass within ``tolerance`` (relative) of the claimed set's."""

    n: int = DEFAULT_CONTROLS
    specific: bool = False
    tolerance: float = DEFAULT_MASS_TOLERANCE


@dataclass(frozen=True)
class RowCheck:
    """One check of a dataset case. ``kind``: answer | captured | attended | attributed | causal | sufficient;
    ``spec``: the
    templated spec of :mod:`.schema`; no ``min_rate``/``max_rate``: every row must pass."""

    kind: str
    spec: Any
    min_rate: float | None = None
    max_rate: float | None = None
    on_interval: bool = False
    control: ControlSpec | None = None
    where: Where | None = field(default=None, compare=False)

    @property
    def has_rate(self) -> bool:
        return self.min_rate is not None or self.max_rate is not None


@dataclass(frozen=True)
class DatasetCase(Case):
    """A case over rows (``each:``); see the module docstring. ``missing``: manifest rows whose image is missing
    or unreadable, ``(path, reason)``; the case fails when their fraction exceeds ``max_missing``."""

    rows: tuple[Row, ...] = ()
    checks: tuple[RowCheck, ...] = ()
    source: str = ""
    missing: tuple[tuple[str, str], ...] = ()
    max_missing: float = 0.0
    show_rows: int = DEFAULT_SHOW_ROWS
    batch: int = DEFAULT_BATCH
    templated: bool = True  # prompt and expect hold {field} templates (false: a one-row case over its image)
