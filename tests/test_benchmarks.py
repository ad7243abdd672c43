"""The full-size benchmark's CPU smoke mode runs end to end and writes sane figures (speed is not asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_full_size_smoke(tmp_path: Path) -> None:
    out = tmp_path / "full_size.json"
    # LLaVA-1.5-7B's widths, heads and depths × 1/16 (2 + 2 layers, 64 / 256 wide); images, patches and vocab full
    cmd = [sys.executable, str(ROOT / "benchmarks" / "full_size.py"), "--scale", "0.0625", "--device", "cpu",
           "--dtype", "float32", "--cases", "2", "--repeats", "1", "--rounds", "1", "--json", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "overhead ratio" in done.stdout
    figures = json.loads(out.read_text())
    for key in ("device", "dtype", "model", "image_tokens", "per_case_seconds", "overhead_ratio", "batching_ratio"):
        assert key in figures, key
    assert figures["dtype"] == "float32"
    assert figures["device"].startswith("CPU")
    assert "llava-1.5-7b architecture" in figures["model"] and "random weights" in figures["model"]
    # only widths and depths shrink: a 336 px image in 14 px patches still puts 24 × 24 tokens in the prompt
    assert figures["image_tokens"] == (336 // 14) ** 2 == 576
    arch = figures["architecture"]
    assert (arch["vision_hidden"], arch["vision_layers"], arch["text_hidden"], arch["text_layers"]) == (64, 2, 256, 2)
    assert arch["vocab_size"] == 32064
    assert figures["sae"]["d_sae"] == 16 * arch["vision_hidden"]
    assert figures["init"] == "transformers default"  # the random init gave finite logits
    for key in ("per_case_seconds", "overhead_ratio", "batching_ratio"):
        value = figures[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
