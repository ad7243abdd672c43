"""The ``vsp-assert`` command line: the parser and :func:`main`; each command lives in its own module.

:func:`build_parser` registers the command groups: ``run`` (:mod:`vsp_assert.cli.run`), ``shapes``
(:mod:`vsp_assert.shapes.cli`), ``compare`` (:mod:`vsp_assert.cli.compare`) and ``explore``
(:mod:`vsp_assert.cli.explore`). Each module's ``add_commands``
adds its subparsers and sets ``func``; :func:`main` parses, calls it, prints every
:class:`~vsp_assert.errors.VspError` as its one message and exits with status 2 (``--debug`` shows the traceback
instead). The help text is plain prose: it is what a user reads in a terminal, not reST. Heavy imports happen
inside the command functions so that ``vsp-assert --help`` does not import torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

DESCRIPTION = """\
Test vision-language models at the level of the visual concepts they use.
A sparse autoencoder (SAE) on the vision encoder shows which concepts an image
holds; the answer's attention shows which of them it read; ablating them shows
which it needed. Test cases (YAML or Python) run under pytest: pytest cases/.
These commands explain one answer, compare two checkpoints on the same cases,
train or import an SAE for your own model and name its latents (concepts), and
train, check or export the shipped shapes-world model."""

EPILOG = """\
examples:
  explain one answer (the shipped shapes-world model and SAE):
    vsp-assert run scene.png "What shape is the red object?"
  ... and whether the answer changes without the stripes concept:
    vsp-assert run scene.png "What shape is the red object?" --ablate stripes
  save a mock model update (noise on one LM layer):
    vsp-assert shapes perturb --out /tmp/shapes-v2
  run the same cases on both checkpoints and list what changed:
    vsp-assert compare --base shapes --new /tmp/shapes-v2 cases/
  an SAE and named concepts for a model, from labelled images:
    vsp-assert sae train --model MODEL --images manifest.jsonl --out my-sae
    vsp-assert concepts build --model MODEL --sae my-sae --images manifest.jsonl
  accuracy and planted mechanisms of the shapes model:
    vsp-assert shapes report --n 200

Models are save_pretrained folders, hub ids available offline, or 'shapes';
SAEs are SAELens-format folders or 'shapes'. 'vsp-assert COMMAND --help'
describes a command's options."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and examples' line breaks, and lists the commands without argparse's extra
    ``{run,compare,…}`` header line above them."""

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._SubParsersAction):
            return "".join(self._format_action(a) for a in action._get_subactions())
        return super()._format_action(action)


def build_parser() -> argparse.ArgumentParser:
    from vsp_assert.cli.compare import add_commands as add_compare
    from vsp_assert.cli.concepts import add_commands as add_concepts
    from vsp_assert.cli.explore import add_commands as add_explore
    from vsp_assert.cli.report import add_commands as add_report
    from vsp_assert.cli.run import add_commands as add_run
    from vsp_assert.cli.sae import add_commands as add_sae
    from vsp_assert.shapes.cli import add_commands as add_shapes

    parser = argparse.ArgumentParser(prog="vsp-assert", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    # ---- command groups: one add_commands(sub) per module, in the order `--help` lists them. ----
    # ---- Register more groups here, then regenerate README's synopsis (tests/test_cli.py prints it). ----
    add_run(sub)
    add_explore(sub)
    add_compare(sub)
    add_sae(sub)
    add_concepts(sub)
    add_shapes(sub)
    add_report(sub)
    # ---- end of command groups ----

    _describe_from_help(sub)
    return parser


def _describe_from_help(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Give every command without a description its one-line ``help`` as one, so ``COMMAND --help`` says what
    the command does (argparse shows the help line only in the parent's list); recurses into groups."""
    helps = {action.dest: action.help for action in sub._choices_actions}
    for name, parser in sub.choices.items():
        if parser.description is None and helps.get(name):
            parser.description = helps[name]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _describe_from_help(action)


def main(argv: Sequence[str] | None = None) -> int:
    from vsp_assert.errors import VspError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # no download-style progress bars: everything here loads from local folders
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        return int(args.func(args) or 0)
    except VspError as exc:
        if args.debug:
            raise
        print(f"vsp-assert: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vsp-assert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
