"""``vsp-assert explore [IMAGE PROMPT]``: the local web explorer (see :mod:`vsp_assert.explore`).

This module owns the command's arguments and its start-up: load the model and the SAE once, pick or read the
first image (and run the first question) when given, bind 127.0.0.1 on a free port, print the address and serve
until Ctrl-C. Heavy imports (torch, the web stack) happen inside the command so that ``vsp-assert --help``
stays fast; a missing web stack is one error naming the extra to install.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Open the VisualScratchpad interface in your browser, on this machine only: pick
a shapes scene or upload an image, ask a question, and see the answer with its
token probabilities, the token x latent heatmap with clustered latents, each
token's attention, and latent details. Ablate or steer latents and clusters,
re-run, search a sufficient set, and save what you found as a YAML case.
Needs the explore extra: pip install "vsp-assert[explore]"."""

EPILOG = """\
examples:
  the shipped shapes-world model, the README's stripes scene preloaded:
    vsp-assert explore stripes-square "What shape is the red object?"
  an image file, and cases saved under ./cases:
    vsp-assert explore photo.png "What animal is this?" --cases-dir cases \\
        --model ./llava-1.5-7b --sae ./clip-l-sae
  a fixed port:
    vsp-assert explore --port 8765

The address is printed when the server is ready (127.0.0.1, a free port unless
--port is given). Ctrl-C stops it; a request in progress finishes first."""


def add_commands(sub: Any) -> None:
    """Add ``explore`` to the main CLI's subparsers."""
    from vsp_assert.cli.run import _layers

    p = sub.add_parser("explore", help="explore answers interactively in a local web page; save cases",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", nargs="?", default=None,
                   help="image file, or a shapes scene name (stripes-square, …) to open with")
    p.add_argument("prompt", nargs="?", default=None, help="question to run at start-up")
    p.add_argument("--model", default="shapes",
                   help="model folder, hub id available offline, or 'shapes' (default: shapes)")
    p.add_argument("--sae", default="shapes", help="SAE folder (SAELens format) or 'shapes' (default: shapes)")
    p.add_argument("--device", default=None, help="torch device (cpu, cuda, …) or auto")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="model dtype (default: the checkpoint's)")
    p.add_argument("--max-new-tokens", type=int, default=8, metavar="N", help="generation length (default: 8)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="concepts per token in the heatmap (default: 5)")
    p.add_argument("--layers", type=_layers, default=None, metavar="L,L,…",
                   help="LM layers to average attention over (default: all)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1; the page has no login, keep it local)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one, printed at start)")
    p.add_argument("--cases-dir", default=".", metavar="DIR",
                   help="folder that saved case files (and their images) go under (default: the current one)")
    p.set_defaults(func=_cmd_explore)


def _cmd_explore(args: argparse.Namespace) -> int:
    from vsp_assert.errors import VspError

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise VspError(f"the explorer's web stack is not installed ({exc.name})",
                       fix='pip install "vsp-assert[explore]"') from None
    from vsp_assert import Scratchpad, load_model, load_sae
    from vsp_assert.explore.server import bind, serve
    from vsp_assert.explore.state import SCENES, ExploreState

    cases_dir = Path(args.cases_dir)
    if not cases_dir.is_dir():
        raise VspError("the cases folder does not exist", field="--cases-dir", received=str(cases_dir),
                       fix="create it, or name an existing folder")
    sock = bind(args.host, args.port)  # before the model loads: a taken port fails at once
    pad = Scratchpad(load_model(args.model, device=args.device, dtype=args.dtype), load_sae(args.sae),
                     attention_layers=args.layers, max_new_tokens=args.max_new_tokens)
    state = ExploreState(pad, cases_dir.resolve(), model_name=args.model, sae_name=args.sae)
    if args.image is not None:
        if args.image in SCENES:
            state.pick_scene(args.image)
        else:
            path = Path(args.image)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise VspError(f"cannot read the image ({exc.strerror})", field="image", received=str(path)) \
                    from None
            state.upload(data, path.name)
        if args.prompt is not None:
            state.run(args.prompt)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"vsp-assert explore: serving http://{shown}:{port}/  (model {args.model}, SAE {args.sae}; "
          f"cases under {cases_dir.resolve()}; Ctrl-C stops)", flush=True)
    try:
        serve(state, sock, top_k=args.top_k)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: the normal way to stop
        pass
    print("vsp-assert explore: stopped", file=sys.stderr, flush=True)
    return 0
