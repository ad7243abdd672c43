"""`vsp-assert explore`'s start-up errors: each one message, before any model loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vsp_assert.cli import main


def test_a_missing_web_stack_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    assert main(["explore"]) == 2
    err = capsys.readouterr().err
    assert "not installed (uvicorn)" in err and 'pip install "vsp-assert[explore]"' in err and "Traceback" not in err


def test_a_missing_cases_folder_and_a_taken_port_are_one_message(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvicorn")
    from vsp_assert.explore.server import bind

    assert main(["explore", "--cases-dir", str(tmp_path / "nowhere")]) == 2
    assert "the cases folder does not exist" in capsys.readouterr().err
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        assert main(["explore", "--cases-dir", str(tmp_path), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
    finally:
        taken.close()
