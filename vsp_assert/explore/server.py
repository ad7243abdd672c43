"""The explorer's web server: a small Starlette app over :class:`~vsp_assert.explore.state.ExploreState`, served
by uvicorn on 127.0.0.1.

Why Starlette + uvicorn: the page needs a dozen JSON endpoints and one static page, nothing more. Starlette is
the small, maintained ASGI toolkit that FastAPI is built on (no schema layer, no templating, no extra parser:
uploads arrive as the request body, so python-multipart is not needed), and uvicorn is the standard server for
it, with a graceful Ctrl-C. Gradio would bring a large front-end bundle and its own layout; Flask would need a
second server for anything but development. Both are in the ``explore`` extra, so the core stays light.

Decisions:

- **Local only.** The server binds 127.0.0.1 by default, on a free port chosen by the OS unless ``--port`` is
  given, and prints its address. Requests whose ``Host`` is not a loopback name are refused (DNS rebinding), and
  so are POSTs whose ``Origin`` is another site's, or that are not JSON (a plain form from another page could
  otherwise reach the endpoints). Case files are written only under the folder given at start-up.
- **One request at a time.** Every endpoint that touches the state runs in a worker thread holding the state's
  lock, so two tabs never interleave model calls or see a half-updated trace.
- **Bad input is an answer, not a crash.** A :class:`~vsp_assert.errors.VspError` becomes HTTP 400 with its
  message; an unexpected exception becomes HTTP 500 with its type and message; the server keeps serving.
- **Nothing half-written.** Case files and images are written atomically (:mod:`vsp_assert.files`), and uvicorn
  lets a request in progress finish on Ctrl-C before it exits.
"""

from __future__ import annotations

import json
import socket
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from vsp_assert.errors import InputError, VspError
from vsp_assert.explore.state import MAX_UPLOAD_BYTES, SCENES

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from vsp_assert.explore.state import ExploreState

LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")
MAX_JSON_BYTES = 1024 * 1024


class _TooLarge(Exception):
    pass


def _is_loopback(host: str) -> bool:
    return host.rsplit(":", 1)[0] in LOOPBACK or host in LOOPBACK


def _refusal(request: Request) -> str | None:
    """Why a request is refused before it reaches the state (None: it may proceed)."""
    if not _is_loopback(request.headers.get("host", "")):
        return "requests must address the server as 127.0.0.1 or localhost"
    if request.method == "POST":
        origin = request.headers.get("origin")
        if origin and origin != "null" and not _is_loopback(urlsplit(origin).netloc):
            return f"requests from another site are refused (origin {origin})"
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        wanted = "application/octet-stream" if request.url.path == "/api/upload" else "application/json"
        if kind != wanted:
            return f"expected a {wanted} body, got {kind or 'none'}"
    return None


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused once it grows past ``limit`` bytes (never read whole into memory first)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(state: ExploreState, *, top_k: int = 5) -> Starlette:
    """The ASGI app: the page at ``/`` and the JSON API under ``/api/``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from vsp_assert.explore import view
    from vsp_assert.explore.page import page_html
    from vsp_assert.render.html_case import IMAGE_BOX, fit_image, png_data_uri

    def locked(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with state.lock:
                return fn()
        return call

    def numbers(body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"ranking": body.get("ranking", "attention")}
        for key in ("max_rate", "min_mean"):
            value = body.get(key)
            if value is None or value == "":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise InputError("not a number", field=key, received=value, allowed="a number")
            out[key] = float(value)
        return out

    def current_view(body: dict[str, Any]) -> dict[str, Any]:
        if state.trace is None:
            return {"trace": None}
        return {"trace": view.trace_view(state.trace, top_k=top_k, **numbers(body)),
                "tried": [view.result_view(state.trace, r) for r in state.tried]}

    def image_info() -> dict[str, Any]:
        cur = state.current
        if cur is None:
            return {"image": None}
        return {"image": png_data_uri(fit_image(cur.image, IMAGE_BOX)), "name": cur.name,
                "scene": cur.name if cur.scene is not None else None,
                "size": list(cur.image.size)}

    async def handle(request: Request, work: Callable[[dict[str, Any], bytes], Any]) -> Response:
        refused = _refusal(request)
        if refused:
            return JSONResponse({"error": refused}, status_code=403)
        try:
            raw = await _body(request, MAX_UPLOAD_BYTES if request.url.path == "/api/upload" else MAX_JSON_BYTES)
            body: dict[str, Any] = {"filename": (request.headers.get("x-filename") or "upload")[:200]}
            if request.method == "POST" and request.url.path != "/api/upload":
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    raise InputError("the request body is not JSON", field="body") from None
                if not isinstance(body, dict):
                    raise InputError("the request body must be a JSON object", field="body",
                                     received=type(body).__name__)
            result = await run_in_threadpool(locked(lambda: work(body, raw)))
            return JSONResponse(result)
        except _TooLarge as big:
            limit = MAX_UPLOAD_BYTES if request.url.path == "/api/upload" else MAX_JSON_BYTES
            return JSONResponse({"error": f"the upload is too large ({big.args[0]:,}+ bytes; at most {limit:,} "
                                          "bytes)", "field": "image"}, status_code=413)
        except VspError as exc:
            return JSONResponse({"error": str(exc), "field": exc.field}, status_code=400)
        except Exception as exc:  # the server keeps running; the traceback goes to its terminal
            traceback.print_exc(file=sys.stderr)
            return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    def endpoint(work: Callable[[dict[str, Any], bytes], Any]) -> Callable[[Request], Any]:
        async def route(request: Request) -> Response:
            return await handle(request, work)
        return route

    async def index(request: Request) -> Response:
        refused = _refusal(request)
        if refused:
            return JSONResponse({"error": refused}, status_code=403)
        return HTMLResponse(page_html(model=state.model_name, sae=state.sae_name),
                            headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                     "style-src 'unsafe-inline'; script-src 'unsafe-inline'"})

    def get_state(body: dict[str, Any], raw: bytes) -> Any:
        return {"scenes": {name: prompt for name, (_, prompt) in SCENES.items()}, "model": state.model_name,
                "sae": state.sae_name, "cases_dir": str(state.cases_dir.resolve()),
                "max_upload_bytes": MAX_UPLOAD_BYTES,
                "prompt": state.trace.prompt if state.trace is not None else None,
                **image_info(), **current_view(body)}

    def scene(body: dict[str, Any], raw: bytes) -> Any:
        state.pick_scene(body.get("name"))  # type: ignore[arg-type]
        return {**image_info(), "prompt": SCENES[str(body.get("name"))][1]}

    def upload(body: dict[str, Any], raw: bytes) -> Any:
        state.upload(raw, body["filename"])
        return image_info()

    def run(body: dict[str, Any], raw: bytes) -> Any:
        state.run(body.get("prompt"))
        return current_view(body)

    def show(body: dict[str, Any], raw: bytes) -> Any:
        return current_view(body)

    def latent(body: dict[str, Any], raw: bytes) -> Any:
        if state.trace is None:
            raise InputError("nothing has run yet", field="latent", fix="ask a question first (Run)")
        return view.latent_view(state.trace, body.get("latent"))

    def intervene(body: dict[str, Any], raw: bytes) -> Any:
        results = state.intervene(body.get("interventions"))
        assert state.trace is not None
        return {"results": [view.result_view(state.trace, r) for r in results],
                "tried": [view.result_view(state.trace, r) for r in state.tried]}

    def sufficient(body: dict[str, Any], raw: bytes) -> Any:
        found = state.sufficient()
        assert state.trace is not None
        return {"sufficient": view.sufficient_view(state.trace, found),
                "tried": [view.result_view(state.trace, r) for r in state.tried]}

    def save(body: dict[str, Any], raw: bytes) -> Any:
        saved = state.save(body.get("file"), body.get("id"))
        from vsp_assert.checks.save_case import case_yaml

        return {"file": str(saved.path), "id": saved.case_id, "yaml": case_yaml(saved.case),
                "image_file": str(saved.image_path) if saved.image_path else None}

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/api/state", endpoint(get_state), methods=["GET", "POST"]),
        Route("/api/scene", endpoint(scene), methods=["POST"]),
        Route("/api/upload", endpoint(upload), methods=["POST"]),
        Route("/api/run", endpoint(run), methods=["POST"]),
        Route("/api/view", endpoint(show), methods=["POST"]),
        Route("/api/latent", endpoint(latent), methods=["POST"]),
        Route("/api/intervene", endpoint(intervene), methods=["POST"]),
        Route("/api/sufficient", endpoint(sufficient), methods=["POST"]),
        Route("/api/save", endpoint(save), methods=["POST"]),
    ]
    return Starlette(routes=routes)


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one the OS picks)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror})", field="port", received=port,
                         fix="choose another --port, or leave it out for a free one") from None
    sock.listen(64)
    return sock


def serve(state: ExploreState, sock: socket.socket, *, top_k: int = 5) -> None:
    """Serve until Ctrl-C (or SIGTERM); a request in progress finishes first."""
    import uvicorn

    config = uvicorn.Config(create_app(state, top_k=top_k), log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=60)
    uvicorn.Server(config).run(sockets=[sock])
