"""``--vsp-device cuda-per-worker``: one GPU per pytest-xdist worker on a machine with several.

pytest-xdist names its workers ``gw0``, ``gw1``, … (``PYTEST_XDIST_WORKER``); worker ``i`` loads its model and SAE
on ``cuda:{i mod n}`` for ``n`` visible GPUs, so ``pytest -n 4 --vsp-device cuda-per-worker`` on a 4-GPU machine
runs four shards side by side, each on its own GPU. Outside xdist it is ``cuda:0``. Any other device string is
passed through unchanged.
"""

from __future__ import annotations

import os
import re

PER_WORKER = "cuda-per-worker"


def worker_device(spec: str, worker: str | None = None, count: int | None = None) -> str:
    """The torch device of this process for ``spec`` (see the module docstring). ``worker``: the xdist worker id
    (default ``$PYTEST_XDIST_WORKER``); ``count``: the number of GPUs (default ``torch.cuda.device_count()``)."""
    if spec != PER_WORKER:
        return spec
    if count is None:
        import torch

        count = torch.cuda.device_count()
    if count < 1:
        from vsp_assert.errors import InputError

        raise InputError("--vsp-device cuda-per-worker needs a CUDA GPU, and none is visible", field="--vsp-device",
                         received=spec, allowed="cpu, cuda, cuda:N, auto", fix="check CUDA_VISIBLE_DEVICES")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    match = re.fullmatch(r"gw(\d+)", worker or "")
    index = int(match.group(1)) if match else 0
    return f"cuda:{index % count}"
