"""The ``vsp-assert`` command line on a saved tiny LLaVA and an SAE folder, and its help text."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

from vsp_assert.cli import build_parser, main

# reST/Sphinx markup that leaks into help when a docstring is reused: ``code``, :class:`X`, :mod:`x`, `x`_ …
REST = re.compile(r"``|:(class|mod|func|meth|attr|data|obj|ref|doc):`|`_")
COMMANDS = {"run", "compare", "shapes"}  # top-level commands that must always be there


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for the main parser and every command and subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_run_prints_answer_concepts_heatmap_and_ablation(saved, capsys):
    rc = main(["run", saved["image"], "what color is the square ?", "--model", saved["model"], "--sae",
               saved["sae"], "--ablate", "red", "--ablate", "blue,stripes", "--color", "no", "--max-new-tokens", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"answer: {saved['answer']!r}" in out
    assert "top-5 attended concepts" in out and "token-latent heatmap" in out
    assert "intervention ablate [red]" in out and "intervention ablate [blue, stripes]" in out
    assert "\x1b[" not in out


def test_run_json_output(saved, capsys):
    rc = main(["run", saved["image"], "what color is the square ?", "--model", saved["model"], "--sae",
               saved["sae"], "--json", "--max-new-tokens", "3", "--sufficient"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["answer"] == saved["answer"]
    assert set(doc) >= {"answer_prob", "output_tokens", "top_concepts", "captured", "interventions"}


def test_run_errors_are_one_message(saved, capsys, tmp_path):
    rc = main(["run", saved["image"], "what ?", "--model", saved["model"], "--sae", str(tmp_path / "missing")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("vsp-assert: error:") and "SAE folder not found" in err and "Traceback" not in err


def test_main_help_is_plain_text_listing_every_command_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert not REST.search(out), REST.search(out)
    commands = re.search(r"\ncommands:\n(.*?)\n\n", out, re.S)
    assert commands, out
    listed = {line.split()[0] for line in commands.group(1).splitlines() if line.startswith("  ") and line.split()}
    registered = {path[0] for path, _ in _parsers(build_parser()) if len(path) == 1}
    assert listed == registered and COMMANDS <= listed
    assert "examples:" in out and "vsp-assert run " in out and "{" not in out.splitlines()[0]


@pytest.mark.parametrize("path", [p for p, _ in _parsers(build_parser())], ids=" ".join)
def test_every_help_page_says_what_the_command_does_in_plain_text(path):
    parser = dict(_parsers(build_parser()))[path]
    text = parser.format_help()
    assert not REST.search(text), f"reST markup in `vsp-assert {' '.join(path)} --help`: {REST.search(text)}"
    assert parser.description, f"`vsp-assert {' '.join(path)} --help` has no description"
    if issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter):  # not re-wrapped: fit 80 columns
        assert max(len(line) for line in f"{parser.description}\n{parser.epilog or ''}".splitlines()) <= 80


def test_every_registered_command_has_a_one_line_help():
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                assert set(helps) == set(action.choices), path  # nothing registered without a help line
                assert all(h and not REST.search(h) for h in helps.values()), helps


def test_help_does_not_import_torch():
    code = "import sys; from vsp_assert.cli import build_parser; build_parser().format_help(); " \
           "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_cli_help_works():
    out = subprocess.run([sys.executable, "-m", "vsp_assert.cli", "--help"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.startswith("usage: vsp-assert") and not REST.search(out.stdout)
    assert all(f"\n  {c} " in out.stdout for c in COMMANDS)


def synopsis(width: int = 112) -> str:
    """The README's command-line synopsis, generated from the real parsers: every leaf command's usage line,
    ``[-h]`` left out, optional options in [brackets] (argparse's own rendering), wrapped to ``width``."""
    import textwrap

    lines = []
    for _path, parser in _parsers(build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue  # a group: its commands are listed instead
        usage = " ".join(parser.format_usage().split()).removeprefix("usage: ").replace(" [-h]", "")
        lines.extend(textwrap.wrap(usage, width, subsequent_indent="    ", break_on_hyphens=False,
                                   break_long_words=False))
    return "\n".join(lines)


def test_readme_synopsis_is_the_parsers_usage():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Command line\n.*?```text\n(.*?)```", readme, re.S)
    assert block, "README.md has no ## Command line section with a ```text block"
    expected = synopsis()
    assert block.group(1).split() == expected.split(), f"regenerate README's synopsis:\n{expected}"
