"""Dataset cases: cost per row of a dataset case ÷ cost per case of the same rows run as single cases.

    python benchmarks/dataset.py [--rows N] [--repeats R] [--json PATH]

The same N shapes-world rows (misleading-concept trigger probes) and the same checks — the answer, and ablating
``stripes`` must restore the shape — run two ways through one Scratchpad (model loaded once): as a dataset case
(:func:`vsp_assert.checks.dataset.run_dataset_case`: rows batched into shared ``generate`` calls, one batched
intervention forward per row) and as N single YAML cases (:func:`vsp_assert.checks.assertions.run_case`, each its
own ``generate`` and forward). ``dataset_cost_ratio`` = dataset seconds per row ÷ single-case seconds per case;
target ≤ 1.3. ``controls_cost_ratio`` adds ``control: random`` (8 random sets per row, in the same forward) to the
dataset case and compares it with the single cases without controls. Each timing is the best of ``--repeats``
interleaved runs (a busy machine only adds time); the ratio, not the seconds, carries across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

CASE = """\
cases:
  - id: stripes
    each: {{scenes: {{mechanism: misleading_concept, set: trigger}}, n: {n}, seed: 0}}
    prompt: "{{question}}"
    max_new_tokens: 3
    expect:
      answer: {{equals: triangle, min_rate: 0.5}}
      causal:
        - {{ablate: [stripes], answer: "{{shape}}", min_rate: 0.5{control}}}
"""


def measure(rows: int, repeats: int) -> dict[str, Any]:
    import tempfile

    import vsp_assert
    from vsp_assert.checks.assertions import run_case
    from vsp_assert.checks.dataset import run_dataset_case
    from vsp_assert.checks.load import parse_case_file
    from vsp_assert.checks.schema import Case

    pad = vsp_assert.Scratchpad(vsp_assert.load_model("shapes"), vsp_assert.load_sae("shapes"), max_new_tokens=3)
    folder = Path(tempfile.mkdtemp())
    (folder / "plain.yaml").write_text(CASE.format(n=rows, control=""))
    (folder / "controls.yaml").write_text(CASE.format(n=rows, control=", control: random"))
    plain = parse_case_file(folder / "plain.yaml").cases[0]
    controlled = parse_case_file(folder / "controls.yaml").cases[0]
    from vsp_assert.checks.load_dataset import fill

    singles = [Case(id=f"r{r.index}", prompt=fill(plain.prompt, r.fields), image=r.image,
                    expect=fill(plain.expect, r.fields), file=plain.file, line=plain.line, max_new_tokens=3)
               for r in plain.rows]

    def run_singles() -> None:
        for case in singles:
            result = run_case(pad, case)
            _ = [r.passed for r in result.records]

    best: dict[str, float] = {"single": float("inf"), "dataset": float("inf"), "controls": float("inf")}
    run_dataset_case(pad, replace(plain, rows=plain.rows[:2]))  # warm-up
    for _ in range(repeats):
        for name, fn in (("single", run_singles), ("dataset", lambda: run_dataset_case(pad, plain)),
                         ("controls", lambda: run_dataset_case(pad, controlled))):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    per = {k: v / rows for k, v in best.items()}
    return {"rows": rows, "repeats": repeats, "seconds_per_row": per,
            "dataset_cost_ratio": round(per["dataset"] / per["single"], 3),
            "controls_cost_ratio": round(per["controls"] / per["single"], 3),
            "load_average": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    figures = measure(args.rows, args.repeats)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n")
    return 0 if figures["dataset_cost_ratio"] <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
