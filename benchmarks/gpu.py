"""Every GPU figure in one command and one JSON: the full-size LLaVA-1.5-7B architecture, the ``wide`` setting and
the peers, on CUDA. Run through ``benchmarks/gpu.sh`` (under 8 minutes on one data-centre GPU is the budget).

    python benchmarks/gpu.py [--json benchmarks/results-gpu.json] [--device cuda]

1. ``benchmarks/full_size.py --device cuda --dtype bfloat16`` in a subprocess (the 7B model is freed with it):
   per-case seconds, overhead and batching ratios, peak GPU memory.
2. ``benchmarks/run.py``'s ``wide`` and ``peers`` figures (full run: 100 wide cases for RSS) on the same device,
   the model and the SAE in bfloat16.

Nothing here has been run on a GPU yet: the project's sessions so far had none. Its CPU path is exercised by the
tests (``tests/test_benchmarks.py``) at small sizes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", dest="json_path", default=str(HERE / "results-gpu.json"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cases", type=int, default=4, help="full-size cases per timing")
    args = parser.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: this script measures GPU figures only", file=sys.stderr)
        return 2
    start = time.perf_counter()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        full_json = Path(tmp) / "full.json"
        subprocess.run([sys.executable, str(HERE / "full_size.py"), "--device", args.device, "--dtype", "bfloat16",
                        "--cases", str(args.cases), "--repeats", "3", "--rounds", "3", "--json", str(full_json)],
                       check=True)
        out["full_size"] = json.loads(full_json.read_text())
    out["full_size_seconds"] = time.perf_counter() - start
    sys.path.insert(0, str(HERE))
    import importlib.util

    spec = importlib.util.spec_from_file_location("vsp_benchmarks_run", HERE / "run.py")
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    sys.modules["vsp_benchmarks_run"] = run
    spec.loader.exec_module(run)
    out["device"] = run._device_name(args.device)
    out.update(run.wide_and_peers(args.device, quick=False))
    out["seconds"] = time.perf_counter() - start
    Path(args.json_path).write_text(json.dumps(out, indent=1) + "\n")
    from tabulate import tabulate

    full = out["full_size"]
    rows = [["full-size overhead ratio (LLaVA-1.5-7B architecture, bf16)", f"{full['overhead_ratio']:.2f}"],
            ["full-size batching ratio", f"{full['batching_ratio']:.2f}"],
            ["full-size seconds per case", f"{full['per_case_seconds']:.3f}"]]
    rows += [row[:2] for row in run.wide_rows(out)]
    print(tabulate(rows, headers=["figure", out["device"]], tablefmt="github"))
    print(f"wrote {args.json_path} in {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
