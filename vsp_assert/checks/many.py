"""Rates in Python tests: ``scratchpad.run_many(rows)`` and :func:`assert_rate`.

The YAML dataset cases (:mod:`.dataset`) have a Python spelling for parametrised tests::

    traces = scratchpad.run_many([(image, "What color is the square?") for image in images])
    assert_rate(traces, lambda t: t.assert_answer("red"), min_rate=0.95)

:func:`run_many` answers rows ``batch`` at a time with one batched ``generate`` each (the traces are those of
``run``). :func:`assert_rate` counts the items a predicate passes — a predicate may return a bool, or call the
fluent ``assert_*`` (a :class:`ConceptAssertionError` counts as a failing row) — and raises
:class:`RateAssertionError` with the rate, its Wilson 95% interval, the count and the worst rows when the bound
fails (``interval=True`` applies the bound to the interval). The rows' traces are not reported one by one to the
pytest session; a failure reports its first failing row's trace and records, so the report shows its evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from vsp_assert.checks.assertions import AssertionRecord, ConceptAssertionError
from vsp_assert.checks.rates import Rate, bound_text, rate_passes
from vsp_assert.errors import InputError

#: failing rows a RateAssertionError names
SHOW_ROWS = 5


class RateAssertionError(AssertionError):
    """A rate over rows missed its bound; carries the :class:`~.rates.Rate` and the failing rows' indices."""

    def __init__(self, what: str, rate: Rate, expected: str, failing: Sequence[int]) -> None:
        self.rate, self.expected, self.failing = rate, expected, list(failing)
        shown = ", ".join(map(str, failing[:SHOW_ROWS])) + (" …" if len(failing) > SHOW_ROWS else "")
        super().__init__(f"{what}: rate {rate.text()}, expected {expected}; failing rows: {shown or '-'}")


def run_many(pad: Any, rows: Iterable[Any], *, prompt: str | None = None, batch: int = 32,
             max_new_tokens: int | None = None) -> list[Any]:
    """One trace per row. A row is ``(image, prompt)``, a mapping with ``image`` and ``prompt`` (``{field}``
    templates in the prompt read the mapping), or an image with ``prompt=`` given (a template too, for mappings)."""
    pairs = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            text = row.get("prompt", prompt)
            if "image" not in row or text is None:
                raise InputError("a row mapping needs 'image' and a prompt", field=f"rows[{i}]",
                                 received=sorted(row), allowed="{'image': …, 'prompt': …} or prompt=")
            pairs.append((row["image"], str(text).format_map(dict(row))))
        elif isinstance(row, tuple) and len(row) == 2 and prompt is None:
            pairs.append(row)
        elif prompt is not None:
            pairs.append((row, prompt))
        else:
            raise InputError("a row is (image, prompt), a mapping, or an image with prompt=", field=f"rows[{i}]",
                             received=type(row).__name__)
    observer = getattr(pad, "observer", None)
    pad.observer = None  # the rows are one check, not hundreds of traced cases
    try:
        traces: list[Any] = []
        for start in range(0, len(pairs), max(1, batch)):
            chunk = pairs[start: start + batch]
            traces += pad.run_batch([p[0] for p in chunk], [p[1] for p in chunk], max_new_tokens=max_new_tokens)
        for trace in traces:
            check = getattr(observer, "check_fit", None)
            if check is not None:
                check(trace)
    finally:
        pad.observer = observer
    return traces


def assert_rate(items: Iterable[Any], predicate: Callable[[Any], Any] | None = None, *,
                min_rate: float | None = None, max_rate: float | None = None, interval: bool = False,
                what: str | None = None) -> Rate:
    """Assert the fraction of ``items`` passing ``predicate`` (or of true ``items``) meets the bounds; returns the
    :class:`~.rates.Rate`. See the module docstring."""
    __tracebackhide__ = True
    for name, bound in (("min_rate", min_rate), ("max_rate", max_rate)):
        if bound is not None and not 0.0 <= bound <= 1.0:
            raise InputError(f"{name} outside [0, 1]", field=name, received=bound, allowed="0 .. 1")
    if min_rate is None and max_rate is None:
        raise InputError("assert_rate needs min_rate and/or max_rate", field="min_rate")
    outcomes: list[bool] = []
    evidence: dict[int, tuple[Any, list[AssertionRecord]]] = {}
    for i, item in enumerate(items):
        ok, records = _evaluate(item, predicate)
        outcomes.append(ok)
        if not ok and records is not None and not evidence:
            evidence[i] = (item, records)
    if not outcomes:
        raise InputError("assert_rate got no rows", field="items", fix="check the rows you ran")
    rate = Rate(sum(outcomes), len(outcomes))
    if rate_passes(rate, min_rate, max_rate, interval):
        return rate
    against = [i for i, ok in enumerate(outcomes) if (not ok) == (min_rate is not None)]
    for item, records in evidence.values():  # the first failing row's evidence, for the report
        observer = getattr(getattr(item, "scratchpad", None), "observer", None)
        if observer is not None:
            observer.traced(item)
            observer.checked(item, records)
    name = what or str(getattr(predicate, "__name__", "check"))
    raise RateAssertionError(name, rate,
                             bound_text(min_rate, max_rate, interval), against)


def _evaluate(item: Any, predicate: Callable[[Any], Any] | None) -> tuple[bool, list[AssertionRecord] | None]:
    if predicate is None:
        return bool(item), None
    pad = getattr(item, "scratchpad", None)
    observer = getattr(pad, "observer", None)
    if pad is not None:
        pad.observer = None
    try:
        value = predicate(item)
    except ConceptAssertionError as exc:
        return False, exc.records
    finally:
        if pad is not None:
            pad.observer = observer
    return (True if value is None or not isinstance(value, bool) else value), None
