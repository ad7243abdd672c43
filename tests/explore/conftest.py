"""Fixtures of the explorer's tests: the shipped shapes-world model behind a Scratchpad (loaded once), the README's
stripes scene, and an explorer server on 127.0.0.1 in a thread of this process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STRIPES = {"background": "stripes", "shapes": [{"shape": "square", "color": "red", "x": 32, "y": 32, "size": 26}]}
SHAPE_PROMPT = "What shape is the red object?"
MAX_NEW_TOKENS = 4


@pytest.fixture(scope="session")
def shapes_pad() -> Any:
    from vsp_assert import Scratchpad, load_model, load_sae

    return Scratchpad(load_model("shapes"), load_sae("shapes"), max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="session")
def stripes_image() -> Any:
    from vsp_assert.shapes import Scene

    return Scene.from_dict(STRIPES).render()


class Live:
    """An explorer server in a thread: ``url``, its ``state``, and ``stop()``."""

    def __init__(self, state: Any) -> None:
        import uvicorn

        from vsp_assert.explore.server import bind, create_app

        self.state = state
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            time.sleep(0.01)
        assert self.server.started, "the explorer server did not start"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def live(shapes_pad: Any, tmp_path: Path) -> Iterator[Live]:
    pytest.importorskip("uvicorn")
    from vsp_assert.explore.state import ExploreState

    server = Live(ExploreState(shapes_pad, tmp_path))
    yield server
    server.stop()

