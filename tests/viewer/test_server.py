"""The viewer's HTTP contract against a running server (issue 10): renders, errors, paths, Save, binding.

Renders are compared with what the library renders for the same latent and camera, so a frame
that was not made from the result (or from the asked-for edit) fails.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
import urllib.parse

import numpy as np
import PIL.Image
import pytest
import torch
import trimesh

from eg3d_invert import InversionResult
from eg3d_invert.inversion import Pivot
from eg3d_invert.render import Scene, render_views
from eg3d_invert.viewer.editing import Edit, apply_edit
from eg3d_invert.viewer.server import bind

from .conftest import MESH_LEVEL, tree_hashes


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, content type, body) of a raw request: the path is sent exactly as given."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def get(server, path: str, **params):
    query = urllib.parse.urlencode(params)
    return request(server, "GET", f"{path}?{query}" if params else path)


def png(body: bytes) -> np.ndarray:
    return np.asarray(PIL.Image.open(io.BytesIO(body)).convert("RGB"))


def render(server, **params) -> np.ndarray:
    status, kind, body = get(server, "/api/render", **params)
    assert status == 200 and kind == "image/png", body[:300]
    return png(body)


@pytest.fixture(scope="module")
def results(result_dirs):
    """The results as the library loads them (independently of the viewer)."""
    return {name: InversionResult.load(d) for name, d in result_dirs.items()}


def test_results_list(server, result_dirs):
    status, kind, body = get(server, "/api/results")
    assert status == 200 and kind == "application/json"
    listed = json.loads(body)
    assert [r["id"] for r in listed] == ["astronaut", "grace"]
    a = listed[0]
    assert a["directory"] == str(result_dirs["astronaut"]) and a["saved_mesh"] == "mesh.glb"
    assert listed[1]["saved_mesh"] is None
    assert a["image_resolution"] == 128 and a["neural_resolution"] == 32 and a["preview_resolution"] == 16
    assert a["checkpoint"] == listed[1]["checkpoint"]  # one checkpoint: mixable
    assert len(a["directions"]) == 32 and all(d["sigma"] > 0 for d in a["directions"])
    eig = [d["eigenvalue"] for d in a["directions"]]
    assert eig == sorted(eig, reverse=True)


def test_full_frames_are_the_results_own_renders(server, results):
    result = results["astronaut"]
    image = render(server, result="astronaut", yaw=20, pitch=5, kind="image", quality="full")
    assert image.shape == (128, 128, 3)
    np.testing.assert_array_equal(image, np.asarray(result.render(20, 5, sample_mult=1.0)))
    raw = render(server, result="astronaut", yaw=20, pitch=5, kind="raw", quality="full")
    assert raw.shape == (32, 32, 3)
    depth = render(server, result="astronaut", yaw=20, pitch=5, kind="depth", quality="full")
    assert depth.shape == (32, 32, 3) and not np.array_equal(depth, raw)
    # The depth the ray marcher returns with the render, coloured as the library colours it.
    np.testing.assert_array_equal(depth, np.asarray(result.depth_maps([20], [5], sample_mult=1.0).colorize()[0]))


def test_previews_are_small_deterministic_and_follow_the_camera(server):
    a = render(server, result="astronaut", yaw=-25, pitch=0, quality="preview")
    assert a.shape == (16, 16, 3)
    np.testing.assert_array_equal(a, render(server, result="astronaut", yaw=-25, pitch=0, quality="preview"))
    assert not np.array_equal(a, render(server, result="astronaut", yaw=25, pitch=0, quality="preview"))
    for kind in ("raw", "depth"):
        assert render(server, result="astronaut", yaw=-25, kind=kind, quality="preview").shape == (16, 16, 3)


@pytest.mark.parametrize("edit", [
    Edit(sefa=((0, 2.5), (3, -1.5))),
    Edit(psi=0.0),
    Edit(other="grace", blend=1.0),
    Edit(other="grace", blend=0.6, layers="coarse"),
    Edit(other="grace", blend=1.0, layers="fine", psi=0.8),
], ids=["sefa", "psi0", "interpolate", "mix-coarse", "mix-fine-psi"])
def test_edited_full_frames_render_the_edited_latent(server, results, edit):
    result = results["astronaut"]
    session = server.viewer.sessions["astronaut"]
    ws = apply_edit(result.pivot.ws, edit, w_avg=result.generator.w_avg, directions=session.directions,
                    other_ws=results["grace"].pivot.ws)
    expected = render_views(Scene.from_ws(result.generator, ws), [10], [-5], sample_mult=1.0, batch_size=1).images[0]
    image = render(server, result="astronaut", yaw=10, pitch=-5, quality="full", **edit.to_params())
    np.testing.assert_array_equal(image, np.asarray(expected))
    assert not np.array_equal(image, render(server, result="astronaut", yaw=10, pitch=-5, quality="full"))


def test_edited_previews_change(server):
    plain = render(server, result="astronaut", yaw=5, quality="preview")
    edited = render(server, result="astronaut", yaw=5, quality="preview", sefa="0:3")
    assert edited.shape == plain.shape and not np.array_equal(plain, edited)


@pytest.mark.parametrize("query, message", [
    ("yaw=abc", "yaw"), ("yaw=200", "yaw"), ("pitch=90", "pitch"), ("pitch=nan", "pitch"), ("kind=normal", "kind"),
    ("quality=best", "quality"), ("sefa=99:1", "does not exist"), ("sefa=0:x", "offset"), ("psi=-1", "psi"),
    ("blend=0.5", "other"), ("other=grace&blend=0.5&layers=middle", "layers"), ("zoom=2", "unknown parameter"),
    ("yaw=1&yaw=2", "twice"), ("client=a", "together"), ("client=a&seq=-1", "seq"),
])
def test_bad_parameters_are_400_with_a_json_error(server, query, message):
    status, kind, body = request(server, "GET", f"/api/render?result=astronaut&{query}")
    assert status == 400 and kind == "application/json"
    error = json.loads(body)["error"]
    assert message in error and "\n" not in error


def test_unknown_results_are_404(server):
    for path in ("/api/render?result=nobody", "/api/mesh?result=nobody", "/api/render?result=astronaut&other=nobody&blend=1",
                 "/files/nobody/report.json"):
        status, kind, body = request(server, "GET", path)
        assert status == 404 and kind == "application/json" and "nobody" in json.loads(body)["error"], path
    status, _, body = request(server, "GET", "/api/render")
    assert status == 400 and "result" in json.loads(body)["error"]


def test_no_path_outside_the_result_folders(server, result_dirs, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the browser")
    link = result_dirs["astronaut"] / "link.txt"
    link.symlink_to(secret)
    try:
        assert request(server, "GET", "/files/astronaut/report.json")[0] == 200
        assert request(server, "GET", "/files/astronaut/mesh.glb")[0] == 200
        for path in ["/files/astronaut/../grace/report.json", "/files/astronaut/%2e%2e/grace/report.json",
                     "/files/astronaut/..%2f..%2f" + secret.name, "/files/astronaut//etc/hostname",
                     f"/files/astronaut/%2F{str(secret).lstrip('/')}", "/files/astronaut/link.txt",
                     "/files/astronaut/", "/files/astronaut/views", "/static/../session.py", "/static/%2e%2e/session.py",
                     "/static/..%2fsession.py", "/static/vendor/../../session.py", "/etc/hostname", "/session.py"]:
            status, kind, body = request(server, "GET", path)
            assert status == 404, (path, status)
            assert b"not for the browser" not in body and kind == "application/json", path
    finally:
        link.unlink()


def test_page_and_static_files(server):
    status, kind, body = request(server, "GET", "/")
    assert status == 200 and kind.startswith("text/html") and b"/static/viewer.js" in body
    for path in ("/static/viewer.js", "/static/viewer.css", "/static/vendor/three/build/three.module.js",
                 "/static/vendor/three/LICENSE"):
        assert request(server, "GET", path)[0] == 200, path


def test_mesh_endpoint(server, result_dirs):
    status, kind, body = get(server, "/api/mesh", result="astronaut")
    assert status == 200 and kind == "model/gltf-binary"
    assert body == (result_dirs["astronaut"] / "mesh.glb").read_bytes()  # the result's own mesh, as it is
    status, _, edited = get(server, "/api/mesh", result="astronaut", sefa="0:2", level=MESH_LEVEL)
    assert status == 200
    mesh = trimesh.load(io.BytesIO(edited), file_type="glb", force="mesh")
    assert len(mesh.vertices) > 100 and np.all(np.abs(mesh.bounds) <= 0.5)
    assert mesh.visual.kind == "vertex"  # coloured
    status, _, extracted = get(server, "/api/mesh", result="grace", level=MESH_LEVEL)  # no mesh file: extracted
    assert status == 200 and len(trimesh.load(io.BytesIO(extracted), file_type="glb", force="mesh").vertices) > 100
    status, kind, body = get(server, "/api/mesh", result="astronaut", level=5000)
    assert status == 422 and "level" in json.loads(body)["error"]
    assert get(server, "/api/mesh", result="astronaut", level="high")[0] == 400


def test_save_writes_new_files_and_never_overwrites(server, result_dirs, results):
    folder = result_dirs["astronaut"]
    before = {k: v for k, v in tree_hashes(folder).items() if not k.startswith("edits/")}
    taken = {p.name for p in (folder / "edits").iterdir()} if (folder / "edits").is_dir() else set()
    body = {"result": "astronaut", "yaw": -15, "pitch": 4, "kind": "image", "sefa": "1:2", "psi": 0.9}
    saved = []
    for _ in range(2):
        status, kind, answer = request(server, "POST", "/api/save", json.dumps(body).encode(),
                                       {"Content-Type": "application/json"})
        assert status == 201 and kind == "application/json", answer
        saved.append(json.loads(answer))
    assert saved[0]["folder"] != saved[1]["folder"]
    new = {p.name for p in (folder / "edits").iterdir()} - taken
    assert len(new) == 2
    after = {k: v for k, v in tree_hashes(folder).items() if not k.startswith("edits/")}
    assert after == before  # the result's own files are untouched
    out = folder / "edits" / sorted(new)[0]
    assert sorted(p.name for p in out.iterdir()) == ["edit.json", "frame.png", "pivot.pt"]
    assert not list(out.glob(".*"))  # no temporaries left
    record = json.loads((out / "edit.json").read_text())
    assert record["view"] == {"yaw": -15.0, "pitch": 4.0, "kind": "image"} and record["edit"]["psi"] == 0.9
    # the frame is the full frame shown for these parameters; the pivot holds the edited latent
    shown = render(server, result="astronaut", yaw=-15, pitch=4, quality="full", sefa="1:2", psi=0.9)
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(out / "frame.png").convert("RGB")), shown)
    pivot = Pivot.load(out / "pivot.pt")
    result = results["astronaut"]
    expected = apply_edit(result.pivot.ws, Edit(sefa=((1, 2.0),), psi=0.9), w_avg=result.generator.w_avg,
                          directions=server.viewer.sessions["astronaut"].directions)
    torch.testing.assert_close(pivot.ws, expected)
    torch.testing.assert_close(pivot.camera, result.pivot.camera)


@pytest.mark.parametrize("body, headers, status, message", [
    (b'{"result": "astronaut"}', {"Content-Type": "text/plain"}, 415, "JSON"),
    (b'{"result": "astronaut",', {"Content-Type": "application/json"}, 400, "malformed"),
    (b'["astronaut"]', {"Content-Type": "application/json"}, 400, "object"),
    (b'{"result": "astronaut", "yaw": 500}', {"Content-Type": "application/json"}, 400, "yaw"),
    (b'{"result": "astronaut", "yaw": [1]}', {"Content-Type": "application/json"}, 400, "yaw"),
    (b'{"result": "astronaut", "quality": "full", "seq": 1}', {"Content-Type": "application/json"}, 400, "seq"),
    (b'{"result": "nobody"}', {"Content-Type": "application/json"}, 404, "nobody"),
])
def test_bad_saves(server, result_dirs, body, headers, status, message):
    before = tree_hashes(result_dirs["astronaut"])
    got, kind, answer = request(server, "POST", "/api/save", body, headers)
    assert got == status and message in json.loads(answer)["error"]
    assert tree_hashes(result_dirs["astronaut"]) == before
    assert request(server, "GET", "/api/save")[0] == 405


def test_listens_on_127_0_0_1_only(server):
    assert server.host == "127.0.0.1" and server.url == f"http://127.0.0.1:{server.port}/"
    # the kernel's table of listening sockets: ours is bound to 127.0.0.1, not to 0.0.0.0
    listening = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if int(port, 16) == server.port and state == "0A":
                listening.append(address)
    assert listening == ["0100007F"]
    for address in ["127.0.0.2"] + _other_addresses():
        with pytest.raises(OSError):
            socket.create_connection((address, server.port), timeout=2).close()
    # and nothing else can be asked for: bind() has no host argument
    sock = bind(0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def _other_addresses() -> list[str]:
    """This machine's IPv4 addresses outside 127.0.0.0/8 (from the kernel's routing tables)."""
    found = set()
    try:
        lines = open("/proc/net/fib_trie").read().splitlines()
    except OSError:
        return []
    for i, line in enumerate(lines):
        if "/32 host LOCAL" in line and i > 0:
            address = lines[i - 1].split()[-1]
            if not address.startswith("127."):
                found.add(address)
    return sorted(found)


def test_other_hosts_are_refused(server):
    status, _, body = request(server, "GET", "/api/results", headers={"Host": "attacker.example"})
    assert status == 400
    assert request(server, "GET", "/api/results", headers={"Host": f"localhost:{server.port}"})[0] == 200


def test_superseded_requests_are_dropped(server):
    session = server.viewer.sessions["grace"]
    order = server.app.state.order
    answers: dict[int, int] = {}

    def ask(seq: int) -> None:
        answers[seq] = get(server, "/api/render", result="grace", quality="preview", yaw=seq, client="tab1", seq=seq)[0]

    with session.lock:  # a render in progress: the two requests wait behind it
        threads = []
        for seq in (1, 2):
            threads.append(threading.Thread(target=ask, args=(seq,)))
            threads[-1].start()
            deadline = time.monotonic() + 30
            while order.waiting("tab1", "grace") != seq:
                assert time.monotonic() < deadline, "the request did not arrive"
                time.sleep(0.01)
    for t in threads:
        t.join(60)
    assert answers == {1: 204, 2: 200}
    # another client's older request is not anyone's superseded request
    assert get(server, "/api/render", result="grace", quality="preview", client="tab2", seq=1)[0] == 200


def test_results_of_another_checkpoint_are_not_mixed(server, monkeypatch):
    grace = server.viewer.sessions["grace"]
    monkeypatch.setattr(grace, "checkpoint", "0" * 64)  # as if grace came from another checkpoint
    status, _, body = get(server, "/api/render", result="astronaut", other="grace", blend=0.5)
    assert status == 400 and "another checkpoint" in json.loads(body)["error"]


def test_result_ids_are_url_safe_and_unique():
    from eg3d_invert.viewer.session import unique_ids

    assert unique_ids(["Photo 1", "photo-1", "..", "Ünï", "photo_1"]) == ["photo-1", "photo-1-2", "result", "n", "photo_1"]
