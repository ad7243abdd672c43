"""The explorer's HTTP API on a live server (127.0.0.1, a thread of this process): the diagnosis by requests,
bad input answered with a clear message while the server keeps serving, requests serialised, local only."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")

from vsp_assert.checks.load import parse_case_file  # noqa: E402
from vsp_assert.explore.state import MAX_UPLOAD_BYTES  # noqa: E402


def post(live: Any, path: str, body: Any = None, **kw: Any) -> Any:
    return httpx.post(live.url + path, json=body if body is not None else {}, timeout=120, **kw)


def upload(live: Any, data: bytes, name: str = "x.png") -> Any:
    return httpx.post(live.url + "/api/upload", content=data, timeout=120,
                      headers={"Content-Type": "application/octet-stream", "X-Filename": name})


def stripes_cluster(view: dict[str, Any]) -> list[int]:
    cluster, = [c for c in view["trace"]["clusters"] if all(n.startswith("stripes#") for n in c["names"])]
    return list(cluster["latents"])


def test_the_readme_diagnosis_by_requests(live: Any, tmp_path: Path) -> None:
    page = httpx.get(live.url + "/", timeout=30)
    assert page.status_code == 200 and 'id="heatmap"' in page.text
    assert "http://" not in page.text.replace(live.url, "") and "https://" not in page.text  # no external asset
    assert post(live, "/api/scene", {"name": "stripes-square"}).json()["prompt"] == "What shape is the red object?"
    view = post(live, "/api/run", {"prompt": "What shape is the red object?"}).json()
    assert view["trace"]["answer"] == "triangle" and view["trace"]["tokens"][0]["p"] > 0.9
    assert 'class="heatmap"' in view["trace"]["heatmap_html"] and "<img" in view["trace"]["attention_html"]
    ids = stripes_cluster(view)
    done = post(live, "/api/intervene", {"interventions": [
        {"concepts": [f"#{i}" for i in ids], "mode": "ablate"},
        {"concepts": ["square"], "mode": "ablate"},
        {"concepts": ["#199"], "mode": "scale", "amount": "2"}]}).json()
    assert [r["answer_after"] for r in done["results"]][:2] == ["square", "triangle"]
    found = post(live, "/api/sufficient").json()["sufficient"]
    assert found["found"] and found["result"]["answer_after"] == "square"
    card = post(live, "/api/latent", {"latent": ids[-1]}).json()
    assert card["name"].startswith("stripes#") and "firing" in card["card_html"] and card["fires"]
    average = post(live, "/api/view", {"ranking": "average"}).json()["trace"]
    assert average["ranking"] == "average" and average["attention_html"] == ""
    strict = post(live, "/api/view", {"max_rate": 0.1})
    assert strict.json()["trace"]["hidden"] > view["trace"]["hidden"]
    saved = post(live, "/api/save", {"file": "triage/cases.yaml", "id": "stripes-triangle"}).json()
    case, = parse_case_file(saved["file"]).cases
    assert Path(saved["file"]) == live.state.cases_dir / "triage" / "cases.yaml"
    assert case.id == "stripes-triangle" and case.image == {"scene": live.state.current.scene}
    outcomes = {c.ablate: c.answer for c in case.expect.causal if c.ablate}
    assert outcomes[tuple(f"#{i}" for i in ids)] == "square" and case.expect.causal[1].changes is False


def test_bad_input_gets_a_clear_message_and_the_server_keeps_serving(live: Any, stripes_image: Any) -> None:
    assert post(live, "/api/run", {"prompt": "What?"}).json()["error"].startswith("field 'image': no image yet")
    post(live, "/api/scene", {"name": "stripes-square"})
    good = post(live, "/api/run", {"prompt": "What shape is the red object?"}).json()["trace"]
    cases = [
        (upload(live, b"GIF89a but not really", "notes.gif"), 400, "not a readable image"),
        (upload(live, b"%PDF-1.4 a document", "paper.pdf"), 400, "not a readable image"),
        (upload(live, b"\0" * (MAX_UPLOAD_BYTES + 1), "huge.png"), 413, "too large"),
        (upload(live, b"", "empty.png"), 400, "the upload is empty"),
        (post(live, "/api/run", {"prompt": "   "}), 400, "the prompt is empty"),
        (post(live, "/api/run", {}), 400, "the prompt is empty"),
        (post(live, "/api/intervene", {"interventions": [{"concepts": ["#236"], "mode": "value",
                                                          "amount": "lots"}]}), 400, "not a number"),
        (post(live, "/api/intervene", {"interventions": [{"concepts": ["#236"], "mode": "scale",
                                                          "amount": "inf"}]}), 400, "out of range"),
        (post(live, "/api/intervene", {"interventions": [{"concepts": ["strpes"], "mode": "ablate"}]}), 400,
         "stripes"),
        (post(live, "/api/intervene", {"interventions": []}), 400, "no intervention given"),
        (post(live, "/api/latent", {"latent": 10_000}), 400, "out of range"),
        (post(live, "/api/scene", {"name": "nowhere"}), 400, "unknown scene"),
        (post(live, "/api/view", {"ranking": "loudest"}), 400, "unknown ranking"),
        (post(live, "/api/save", {"file": "../escape.yaml"}), 400, "inside the cases folder"),
        (post(live, "/api/save", {"file": "notes.txt"}), 400, ".yaml or .yml"),
        (httpx.post(live.url + "/api/run", content=b"{not json", timeout=30,
                    headers={"Content-Type": "application/json"}), 400, "not JSON"),
    ]
    for response, status, text in cases:
        assert response.status_code == status, response.text
        assert text in response.json()["error"], response.json()
    assert "amount" in cases[6][0].json()["field"]
    # the server is still up, and the bad requests left the image and the trace alone
    again = post(live, "/api/view").json()["trace"]
    assert again["answer"] == good["answer"] == "triangle" and again["heatmap_html"] == good["heatmap_html"]
    buffer = io.BytesIO()
    stripes_image.save(buffer, format="PNG")
    assert upload(live, buffer.getvalue(), "scene.png").json()["size"] == [64, 64]
    assert post(live, "/api/run", {"prompt": "What color is the square?"}).json()["trace"]["answer"] == "red"


def test_requests_from_elsewhere_are_refused(live: Any) -> None:
    assert httpx.get(live.url + "/", headers={"Host": "evil.example:80"}, timeout=30).status_code == 403
    foreign = post(live, "/api/scene", {"name": "stripes-square"}, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "another site" in foreign.json()["error"]
    form = httpx.post(live.url + "/api/scene", content=b"name=stripes-square", timeout=30,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 403
    assert live.state.current is None  # none of them reached the state


def test_two_tabs_at_once_are_served_one_after_the_other(live: Any) -> None:
    """Requests from several clients at once never overlap inside the model, and each gets a whole answer."""
    post(live, "/api/scene", {"name": "stripes-square"})
    post(live, "/api/run", {"prompt": "What shape is the red object?"})
    pad = live.state.pad
    active, overlaps = [0], [0]
    guard = threading.Lock()

    def counting(method: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with guard:
                active[0] += 1
                overlaps[0] = max(overlaps[0], active[0])
            try:
                return method(*args, **kwargs)
            finally:
                with guard:
                    active[0] -= 1
        return wrapped

    pad.run_batch, pad.intervene = counting(pad.run_batch), counting(pad.intervene)
    answers: dict[str, list[Any]] = {"run": [], "intervene": []}

    def tab(kind: str) -> None:
        for _ in range(4):
            if kind == "run":
                answers[kind].append(post(live, "/api/run", {"prompt": "What color is the square?"}).json())
            else:
                answers[kind].append(post(live, "/api/intervene", {"interventions": [
                    {"concepts": ["stripes"], "mode": "ablate"}]}).json())

    try:
        threads = [threading.Thread(target=tab, args=(k,)) for k in ("run", "intervene", "run", "intervene")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        del pad.run_batch, pad.intervene
    assert overlaps[0] == 1
    assert all(a["trace"]["answer"] == "red" for a in answers["run"])
    for a in answers["intervene"]:  # on whichever trace was current: the red one or the first triangle one
        assert "error" not in a and a["results"][0]["answer_before"] in ("red", "triangle")
