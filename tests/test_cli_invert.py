"""``eg3d-invert PHOTO_OR_FOLDER... --out DIR`` and ``eg3d-invert render`` (issue 5), end to end.

One batch (scikit-image's astronaut, a corrupt JPEG, a photo without a face and a text file)
is inverted once per module with the tiny_A reference checkpoint, 2 projection + 1 tuning steps
and small renders; the other tests copy its output folder and resume, re-render, interrupt or
overwrite it. LPIPS loads random weights saved under torchvision's file names in a temporary
TORCH_HOME (:mod:`tests.lpips_weights`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from typer.testing import CliRunner

from eg3d_invert import InversionResult
from eg3d_invert import api as api_module
from eg3d_invert import batch as batch_module
from eg3d_invert.batch import collect_inputs, plan_names
from eg3d_invert.cli import app, main
from eg3d_invert.errors import InterruptedRun
from eg3d_invert.inversion import Pivot
from eg3d_invert.pretrained import file_sha256, load_generator

from .conftest import REFERENCE, require
from .lpips_weights import random_lpips_environment

TINY = REFERENCE / "tiny_A.pkl"
RENDER = ["--views=-20,0,20:10", "--frames", "3", "--mesh-res", "40", "--mesh-level", "4", "--mesh", "ply,obj"]
FAST = ["--network", str(TINY), "--device", "cpu", "--steps", "2", "--pti-steps", "1", *RENDER]
VIEW_FILES = ["views/yaw-020_pitch+000.png", "views/yaw+000_pitch+000.png", "views/yaw+020_pitch+010.png"]


@pytest.fixture(scope="module", autouse=True)
def torch_home(tmp_path_factory):
    """Random LPIPS backbones in a TORCH_HOME shared by this session's tests (built once)."""
    with random_lpips_environment(tmp_path_factory.getbasetemp() / "torch_home") as home:
        yield home


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import skimage.data

    require(TINY)
    root = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage.data.astronaut()).save(root / "astronaut.PNG")  # upper-case suffix on purpose
    jpeg = root / "corrupt.jpg"
    Image.fromarray(skimage.data.astronaut()).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:3000])  # truncated JPEG
    (root / "faces").mkdir()
    Image.new("RGB", (240, 180), (90, 140, 200)).save(root / "faces" / "sky.png")  # no face
    (root / "notes.txt").write_text("not a photo")
    return root


def invoke(*args):
    args = [str(a) for a in args]
    # The time estimate's probe (a few steps) is tested once, below; elsewhere it only costs time.
    # Only the invert command has --no-estimate: not the other commands, nor the root's --version.
    if args and args[0] not in ("align", "render", "models", "info", "view", "--version") and "--help" not in args \
            and not any(a.endswith("estimate") for a in args):
        args.append("--no-estimate")
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def batch(photos, tmp_path_factory):
    """The batch run: no command name given (the invert command is the default)."""
    out = tmp_path_factory.mktemp("run") / "out"
    result = invoke(photos, "--out", out, *FAST, "--json")
    return out, result


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy(out: Path, dest: Path) -> Path:
    shutil.copytree(out / "astronaut", dest / "astronaut")  # copy2: mtimes kept
    return dest


@pytest.fixture
def count_projections(monkeypatch):
    calls = []
    real = api_module.project

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(api_module, "project", counting)
    return calls


# --- the batch -------------------------------------------------------------------------------------


def test_batch_goes_on_after_bad_photos_and_reports_them(batch, photos):
    out, result = batch
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)  # --json: one document on stdout
    assert (doc["succeeded"], doc["failed"], doc["inverted"], doc["interrupted"]) == (1, 2, 1, False)
    by_name = {Path(p["source"]).name: p for p in doc["photos"]}
    assert set(by_name) == {"astronaut.PNG", "corrupt.jpg", "sky.png"}  # notes.txt is not a photo
    assert by_name["astronaut.PNG"]["status"] == "ok" and by_name["astronaut.PNG"]["directory"] == str(out / "astronaut")
    for bad, words in (("corrupt.jpg", "corrupt.jpg"), ("sky.png", "no face")):
        entry = by_name[bad]
        assert entry["status"] == "failed" and entry["stage"] == "align" and words in entry["error"]
        assert entry["directory"] is None
        assert f"error: {entry['error'][:30]}" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert json.loads((out / "summary.json").read_text())["photos"] == doc["photos"]
    assert doc["settings"]["projection"]["num_steps"] == 2 and doc["settings"]["render"]["frames"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["astronaut", "summary.json"]
    assert not [p for p in out.rglob(".*")], "temporary files left behind"
    assert (photos / "astronaut.PNG").is_file() and not list(photos.rglob("*.json"))  # inputs untouched


def test_result_folder_contents(batch):
    out, _ = batch
    d = out / "astronaut"
    G = load_generator(TINY)
    size, r = G.img_resolution, G.neural_rendering_resolution
    report = json.loads((d / "report.json").read_text())
    assert report["files"]
    for rel, nbytes in report["files"].items():
        assert (d / rel).stat().st_size == nbytes, rel
    listed = set(report["files"]) | {"report.json"}
    assert listed == {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
    assert Image.open(d / "aligned.png").size == (512, 512)
    recon = Image.open(d / "reconstruction.png")
    assert recon.width > 2 * size and recon.height > size  # input | reconstruction, captioned
    for rel in VIEW_FILES:
        assert Image.open(d / rel).size == (size, size)
    assert Image.open(d / "views.png").width > 3 * size
    for rel in VIEW_FILES:
        depth = np.load(d / rel.replace("views/", "depth/").replace(".png", ".npy"))
        assert depth.shape == (r, r) and depth.dtype == np.float32
        assert Image.open(d / rel.replace("views/", "depth/")).size == (r, r)
    camera = json.loads((d / "camera.json").read_text())
    assert len(camera["label"]) == 25 and abs(camera["yaw_deg"]) < 10
    pivot = Pivot.load(d / "pivot.pt")
    assert pivot.ws.shape == (1, G.num_ws, G.w_dim) and pivot.steps == 2
    tuned = load_generator(d / "tuned.safetensors")  # finds its base (tiny_A) by the recorded path and hash
    assert any(not torch.equal(v, G.state_dict()[k]) for k, v in tuned.state_dict().items())
    # the report
    assert report["settings"]["checkpoint"]["sha256"] == file_sha256(TINY)
    assert report["photo"]["sha256"] and report["versions"]["eg3d_invert"]
    assert set(report["timings"]) == {"align", "project", "tune", "finalize", "views", "depth", "video", "mesh"}
    assert report["losses"]["project"]["steps"] == 2 and len(report["losses"]["tune"]["loss"]) == 1
    assert 0 < report["metrics"]["lpips"] < 2 and report["render"]["frames"] == 3
    # the meshes: non-empty, coloured, inside the tri-plane box (world units)
    for fmt in ("ply", "obj"):
        mesh = trimesh.load(d / f"mesh.{fmt}", process=False, force="mesh")
        assert len(mesh.vertices) > 100 and len(mesh.faces) > 100
        colors = np.asarray(mesh.visual.vertex_colors)
        assert len(np.unique(colors[:, :3], axis=0)) > 10
        assert np.all(np.abs(mesh.bounds) <= G.rendering_kwargs["box_warp"] / 2 + 1e-6)
    import imageio.v2 as imageio

    reader = imageio.get_reader(d / "orbit.mp4")
    try:
        assert reader.count_frames() == 3 and reader.get_data(0).shape == (size, size, 3)
    finally:
        reader.close()


def test_resume_skips_complete_photos(batch, photos, count_projections):
    out, _ = batch
    before = _mtimes(out / "astronaut")
    result = invoke(photos, "--out", out, *FAST)  # --resume is the default
    assert result.exit_code == 1, result.output  # the two bad photos fail again
    assert "skipped" in result.stdout and count_projections == []
    assert _mtimes(out / "astronaut") == before
    doc = json.loads((out / "summary.json").read_text())
    assert [p["action"] for p in doc["photos"] if p["status"] != "failed"] == ["skipped"]
    assert doc["photos"][0]["metrics"]["lpips"] > 0  # taken from the report on disk


def test_other_render_options_rerender_without_inverting(batch, photos, tmp_path, count_projections):
    out = _copy(batch[0], tmp_path)
    before = _mtimes(out / "astronaut")
    result = invoke(photos / "astronaut.PNG", "--out", out, *FAST, "--mesh", "glb", "--views=0", "--no-video")
    assert result.exit_code == 0, result.output
    assert count_projections == []  # no re-inversion: the saved one was loaded
    after = _mtimes(out / "astronaut")
    for name in ("pivot.pt", "tuned.safetensors", "aligned.png", "camera.json"):
        assert after[name] == before[name], name
    files = set(after)
    assert {"mesh.glb", "views/yaw+000_pitch+000.png", "depth/yaw+000_pitch+000.npy"} <= files
    assert not {"mesh.ply", "mesh.obj", "orbit.mp4", "views/yaw-020_pitch+000.png"} & files  # stale renders removed
    report = json.loads((out / "astronaut" / "report.json").read_text())
    assert report["render"]["mesh_formats"] == ["glb"] and set(report["files"]) | {"report.json"} == files
    # the views that exist in both runs are the same pixels
    np.testing.assert_array_equal(np.asarray(Image.open(out / "astronaut" / VIEW_FILES[1])),
                                  np.asarray(Image.open(batch[0] / "astronaut" / VIEW_FILES[1])))


def test_interrupted_render_leaves_an_unfinished_folder_that_resumes(batch, photos, tmp_path, monkeypatch,
                                                                     count_projections):
    out = _copy(batch[0], tmp_path)
    real = batch_module.write_renders

    def interrupted(result, directory, options, progress=None):
        (Path(directory) / "views").mkdir(exist_ok=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_module, "write_renders", interrupted)
    args = [photos / "astronaut.PNG", "--out", out, *FAST, "--views=0", "--no-video", "--mesh", "none"]
    result = invoke(*args)
    assert result.exit_code == 130, result.output
    doc = json.loads((out / "summary.json").read_text())
    assert doc["interrupted"] and doc["not_processed"] == [str(photos / "astronaut.PNG")]
    report = json.loads((out / "astronaut" / "report.json").read_text())
    assert report["render"] is None and set(report["files"]) == {"aligned.png", "camera.json", "pivot.pt", "pivot.npy",
                                                                 "tuned.safetensors", "reconstruction.png"}
    monkeypatch.setattr(batch_module, "write_renders", real)
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["photos"][0]["action"] == "rendered" and count_projections == []
    assert not (out / "astronaut" / "mesh.ply").exists() and not (out / "astronaut" / "orbit.mp4").exists()


def test_a_mesh_level_without_surface_skips_only_the_mesh(batch, photos, tmp_path, count_projections):
    out = _copy(batch[0], tmp_path)
    result = invoke(photos / "astronaut.PNG", "--out", out, *FAST, "--mesh-level", "1000", "--json")
    assert result.exit_code == 0, result.output  # the photo is done: views, depth, video, tuned generator
    assert count_projections == []
    d = out / "astronaut"
    report = json.loads((d / "report.json").read_text())
    [warning] = report["warnings"]
    assert warning.startswith("mesh skipped: no surface at density level 1000") and "spans [" in warning
    assert json.loads(result.stdout)["photos"][0]["warnings"] == [warning]
    assert "warning:" in result.stderr and "1000" in result.stderr
    assert not list(d.glob("mesh.*")) and (d / "orbit.mp4").is_file() and (d / VIEW_FILES[0]).is_file()
    assert set(report["files"]) | {"report.json"} == {p.relative_to(d).as_posix() for p in d.rglob("*")
                                                      if p.is_file()}
    again = invoke(photos / "astronaut.PNG", "--out", out, *FAST, "--mesh-level", "1000")
    assert again.exit_code == 0 and "skipped" in again.stdout  # complete: the same options give the same result


def test_invert_says_which_of_several_faces_it_took(photos, tmp_path):
    import matplotlib.cbook

    a = np.asarray(Image.open(photos / "astronaut.PNG"))
    g = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
                   .convert("RGB").resize((341, 400)))
    canvas = np.full((512, 853, 3), 200, np.uint8)
    canvas[:, :512] = a
    canvas[56:456, 512:] = g
    Image.fromarray(canvas).save(tmp_path / "pair.png")
    result = invoke(tmp_path / "pair.png", "--out", tmp_path / "out", "--network", TINY, "--device", "cpu",
                    "--steps", "1", "--pti-steps", "1", "--views=none", "--no-video", "--mesh", "none", "--json")
    assert result.exit_code == 0, result.output
    assert "2 faces found; using #0" in " ".join(result.stderr.split())
    assert json.loads(result.stdout)["photos"][0]["faces"] == {"found": 2, "used": 0}


def _killed_while_writing(path: Path) -> None:
    """Start writing ``path`` the way every output is written, then die by SIGKILL (no cleanup runs)."""
    import signal
    import subprocess
    import sys

    code = ("import sys, time; from eg3d_invert._io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half a file'); print(tmp, flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert Path(proc.stdout.readline().strip()).is_file()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()


def test_a_killed_run_leaves_temporaries_that_the_next_run_removes(batch, photos, tmp_path):
    out = _copy(batch[0], tmp_path)
    d = out / "astronaut"
    for target in (d / "aligned.png", d / "views" / "yaw+000_pitch+000.png", d / "orbit.mp4", out / "summary.json"):
        _killed_while_writing(target)
    def leftovers():
        return sorted(p.relative_to(out).as_posix() for p in out.rglob(".*") if p.name != ".keep")

    assert len(leftovers()) == 4, leftovers()
    (d / ".keep").write_text("not ours")
    result = invoke(photos / "astronaut.PNG", "--out", out, *FAST)  # resume: the photo is complete
    assert result.exit_code == 0, result.output
    assert "skipped" in result.stdout
    assert leftovers() == [] and (d / ".keep").is_file()


def test_interrupted_inversion_writes_nothing_and_exits_130(photos, tmp_path, monkeypatch):
    def stop(*a, **k):
        raise InterruptedRun("projection interrupted after 0/2 steps")

    monkeypatch.setattr(api_module, "project", stop)
    out = tmp_path / "out"
    result = invoke(photos / "astronaut.PNG", photos / "faces", "--out", out, *FAST)
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.stderr and "Traceback" not in result.stderr
    doc = json.loads((out / "summary.json").read_text())
    assert doc["interrupted"] and len(doc["not_processed"]) == 2 and doc["photos"] == []
    assert not (out / "astronaut" / "report.json").exists()


def test_overwrite_inverts_again_with_identical_results(batch, photos, tmp_path, count_projections):
    out = _copy(batch[0], tmp_path)
    before = _mtimes(out / "astronaut")
    result = invoke(photos / "astronaut.PNG", "--out", out, *FAST, "--overwrite")
    assert result.exit_code == 0, result.output
    assert count_projections == [1]
    after = _mtimes(out / "astronaut")
    assert after["pivot.pt"] != before["pivot.pt"]
    # deterministic for a seed: the same pixels, depth and mesh as the first run
    for rel in [*VIEW_FILES, "reconstruction.png", "aligned.png"]:
        np.testing.assert_array_equal(np.asarray(Image.open(out / "astronaut" / rel)),
                                      np.asarray(Image.open(batch[0] / "astronaut" / rel)), err_msg=rel)
    assert (out / "astronaut" / "mesh.ply").read_bytes() == (batch[0] / "astronaut" / "mesh.ply").read_bytes()
    new, old = (json.loads((d / "astronaut" / "report.json").read_text()) for d in (out, batch[0]))
    assert new["metrics"] == old["metrics"] and new["losses"] == old["losses"]


def test_render_command_reproduces_the_images(batch, tmp_path, count_projections):
    out, _ = batch
    target = tmp_path / "rendered"
    result = invoke("render", out, "--out", target, *RENDER, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["succeeded"] == 1 and doc["photos"][0]["action"] == "rendered" and count_projections == []
    a, b = out / "astronaut", target / "astronaut"
    for rel in [*VIEW_FILES, "views.png", "reconstruction.png"]:
        np.testing.assert_array_equal(np.asarray(Image.open(b / rel)), np.asarray(Image.open(a / rel)), err_msg=rel)
    for rel in VIEW_FILES:
        npy = rel.replace("views/", "depth/").replace(".png", ".npy")
        np.testing.assert_array_equal(np.load(b / npy), np.load(a / npy))
    for rel in ("mesh.ply", "mesh.obj", "orbit.mp4"):
        assert (b / rel).read_bytes() == (a / rel).read_bytes(), rel
    loaded = InversionResult.load(b)  # a complete result folder
    assert loaded.pivot.steps == 2


def test_render_in_place_and_its_errors(batch, tmp_path):
    out = _copy(batch[0], tmp_path)
    before = (out / "astronaut" / VIEW_FILES[0]).read_bytes()
    result = invoke("render", out / "astronaut", "--views=-20", "--no-video", "--mesh", "none", "--no-depth")
    assert result.exit_code == 0, result.output
    d = out / "astronaut"
    assert (d / VIEW_FILES[0]).read_bytes() == before and not (d / "orbit.mp4").exists()
    assert not (d / "depth").exists() and not (d / "mesh.ply").exists()
    assert invoke("render", tmp_path / "nothing_here").exit_code == 2
    (d / "pivot.pt").unlink()
    result = invoke("render", d, "--views=0", "--no-video", "--mesh", "none")
    assert result.exit_code == 1 and "pivot.pt" in result.stderr and "Traceback" not in result.stderr


def test_render_out_never_replaces_another_photos_result(batch, tmp_path):
    out, _ = batch
    target = tmp_path / "copies"
    other = target / "astronaut"  # another photo's result under the same name
    other.mkdir(parents=True)
    claim = {"format": "eg3d-invert/result", "photo": {"path": str(tmp_path / "someone_else.jpg")}}
    (other / "report.json").write_text(json.dumps(claim))
    result = invoke("render", out, "--out", target, "--views=0", "--no-video", "--mesh", "none", "--no-depth",
                    "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["photos"][0]["name"] == "astronaut_2"
    assert json.loads((other / "report.json").read_text()) == claim and sorted(p.name for p in other.iterdir()) == [
        "report.json"]
    assert (target / "astronaut_2" / "views" / "yaw+000_pitch+000.png").is_file()


def test_invert_has_max_megapixels(photos, tmp_path):
    result = invoke(photos / "astronaut.PNG", "--out", tmp_path / "out", *FAST, "--max-megapixels", "0.1")
    assert result.exit_code == 1, result.output  # the 512x512 photo (0.26 MP) is refused, as asked
    message = " ".join(result.stderr.split())
    assert "above the limit of 0.1 MP" in message and "--max-megapixels" in message


def test_weights_only_pth_with_base(photos, tmp_path):
    """PTI / EG3D-projector write {'G_ema': state_dict}; --base names the configuration it shares."""
    G = load_generator(TINY)
    pth = tmp_path / "model_pti.pth"
    torch.save({"G_ema": {k: v.clone() for k, v in G.state_dict().items()}}, pth)
    quick = ["--views=0", "--no-video", "--mesh", "none", "--no-depth", "--device", "cpu", "--steps", "1",
             "--pti-steps", "1"]
    result = invoke(photos / "astronaut.PNG", "--out", tmp_path / "no-base", "--network", pth, *quick)
    assert result.exit_code == 1 and "--base" in result.stderr and "Traceback" not in result.output
    result = invoke(photos / "astronaut.PNG", "--out", tmp_path / "out", "--network", pth, "--base", TINY, *quick,
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "astronaut" / "report.json").read_text())
    assert report["settings"]["checkpoint"]["path"] == str(pth.resolve())
    assert report["settings"]["checkpoint"]["format"] == "torch"


# --- output folders that cannot be written ---------------------------------------------------------


def test_unwritable_out_is_refused_before_any_work(batch, photos, unwritable_dir, count_projections):
    for args in ([photos, "--out", unwritable_dir, *FAST], ["render", batch[0], "--out", unwritable_dir]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert "cannot write the --out folder" in result.stderr and str(unwritable_dir) in result.stderr
        assert "Traceback" not in result.output
    assert count_projections == []  # refused before the first photo was inverted
    result = CliRunner().invoke(app, ["align", str(photos / "astronaut.PNG"), "--out", str(unwritable_dir)])
    assert result.exit_code == 2 and "cannot write the --out folder" in result.stderr, result.output
    # a file in the way of --out (or of a folder above it) is the same kind of error
    for out in (photos / "notes.txt", photos / "notes.txt" / "sub"):
        for cmd in ([], ["align"]):
            result = invoke(*cmd, photos / "astronaut.PNG", "--out", out, *([] if cmd else FAST))
            assert result.exit_code == 2 and "cannot write the --out folder" in result.stderr, result.output
            assert "Traceback" not in result.output


def test_summary_that_cannot_be_written_is_one_error_line(photos, tmp_path):
    out = tmp_path / "out"
    (out / "summary.json").mkdir(parents=True)  # something in the way of the summary
    result = invoke(photos / "faces" / "sky.png", "--out", out, *FAST)
    assert result.exit_code == 1, result.output
    assert "cannot write the summary" in result.stderr and "Traceback" not in result.output


# --- usage, routing, errors ------------------------------------------------------------------------


@pytest.mark.parametrize("extra, message", [
    (["--views=left"], "views"), (["--views=200"], "yaw 200 is outside [-180, 180]"),
    (["--views=0,-181:5"], "yaw -181 is outside"), (["--views=0:90"], "pitch 90 is outside (-90, 90)"),
    (["--mesh", "stl"], "mesh format"), (["--projector", "z"], "projector"),
    (["--network", "no-such-model"], "no-such-model"), (["--steps", "0"], "steps"), (["--bogus"], "bogus"),
])
def test_usage_errors_exit_2(photos, tmp_path, extra, message):
    args = [photos, "--out", tmp_path / "out", *FAST, *extra]
    if "--network" in extra:
        args = [photos, "--out", tmp_path / "out", *extra]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_no_inputs_and_bad_out_exit_2(photos, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    result = invoke(empty, "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 2 and "no photos found" in result.stderr
    result = invoke(photos, "--out", photos / "notes.txt", *FAST)
    assert result.exit_code == 2 and "a file" in result.stderr


def test_missing_device_is_a_usage_error(batch, photos, tmp_path):
    for args in ([photos / "astronaut.PNG", "--out", tmp_path / "out", *FAST, "--device", "cuda:999"],
                 ["render", batch[0], "--device", "cuda:999"]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert "'cuda:999' is not available on this machine (available: cpu" in " ".join(result.stderr.split())
        assert "Traceback" not in result.output and "checkpoint" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_torch_home_that_is_a_file_is_one_error_line_before_any_photo(photos, tmp_path, monkeypatch,
                                                                      count_projections):
    home = tmp_path / "torch_home"
    home.write_text("not a folder")
    monkeypatch.setenv("TORCH_HOME", str(home))
    result = invoke(photos / "astronaut.PNG", "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 1, result.output
    assert "TORCH_HOME" in result.stderr and "Traceback" not in result.output and count_projections == []


def test_debug_shows_the_traceback(photos, tmp_path):
    args = [photos / "faces" / "sky.png", "--out", tmp_path / "out", *FAST, "--quiet"]
    quiet = invoke(*args)
    assert quiet.exit_code == 1 and quiet.stdout == "" and "Traceback" not in quiet.stderr
    assert "no face" in quiet.stderr
    debug = invoke(*args, "--debug")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "NoFaceError" in debug.stderr


def test_command_routing(capsys):
    for args in (["--version"], ["invert", "--help"], ["--help"]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
    assert "invert" in invoke("--help").stdout and "render" in invoke("--help").stdout
    with pytest.raises(SystemExit) as exit_info:  # the console-script entry point
        main(["--version"])
    assert exit_info.value.code in (0, None) and capsys.readouterr().out.strip()


# --- inputs and names (no inversion) ----------------------------------------------------------------


def test_collect_inputs_matches_suffixes_and_skips_our_outputs(tmp_path):
    src = tmp_path / "src"
    (src / "deep" / "er").mkdir(parents=True)
    for name in ("a.JPG", "deep/b.jpeg", "deep/er/c.WebP", "d.txt", ".hidden.png"):
        (src / name).write_bytes(b"x")
    res = src / "results" / "a"
    res.mkdir(parents=True)
    (res / "report.json").write_text(json.dumps({"format": "eg3d-invert/result"}))
    (res / "aligned.png").write_bytes(b"x")
    partial = src / "older" / "b"  # a result folder whose run stopped before its report
    partial.mkdir(parents=True)
    (partial / "aligned.png").write_bytes(b"x")
    (partial / "camera.json").write_text("{}")
    names = lambda paths: sorted(p.name for p in paths)  # noqa: E731
    assert names(collect_inputs([src], src / "results")) == ["a.JPG", "b.jpeg", "c.WebP"]
    # --out is the input folder itself: its result folders are not photos
    (src / "a").mkdir()
    (src / "a" / "report.json").write_text(json.dumps({"format": "eg3d-invert/result"}))
    (src / "a" / "views.png").write_bytes(b"x")
    assert names(collect_inputs([src], src)) == ["a.JPG", "b.jpeg", "c.WebP"]


def test_plan_names_never_share_or_steal_a_folder(tmp_path):
    a, b, c = tmp_path / "x" / "face.jpg", tmp_path / "y" / "face.png", tmp_path / "y" / "Face.jpg"
    out = tmp_path / "out"
    assert plan_names([a, b, c], out) == ["face", "face_2", "Face_3"]
    # a folder holding another photo's result is skipped, one holding this photo's is reused
    (out / "face").mkdir(parents=True)
    (out / "face" / "report.json").write_text(json.dumps({"format": "eg3d-invert/result",
                                                          "photo": {"path": str(b.resolve())}}))
    assert plan_names([a], out) == ["face_2"]
    assert plan_names([b], out) == ["face"]
    # a folder that holds an input photo is never used
    inside = out / "face_2" / "face.jpg"
    inside.parent.mkdir()
    inside.write_bytes(b"x")
    assert plan_names([a, inside], out) == ["face_3", "face_4"]


def test_preset_help_states_every_difference_of_fast():
    from eg3d_invert.inversion.settings import preset_differences, preset_phrases

    text = " ".join(invoke("invert", "--help").stdout.replace("│", " ").split())
    phrases = preset_phrases("fast")
    assert len(phrases) == sum(len(changes) for changes in preset_differences("fast").values())
    for phrase in phrases:
        assert phrase in text, phrase
    assert "tuning lr 0.0006 (official 0.0003)" in text  # the difference the help once left out
    assert "all projection steps on the raw render at 0.5x resolution" in text


def test_invert_warns_about_an_untrustworthy_pose_before_inverting(photos, tmp_path):
    """A face cut by the photo's border: the warning is printed right after alignment (before the
    projection's first step) and recorded in camera.json, report.json and the summary."""
    from eg3d_invert import batch
    from eg3d_invert.api import Inverter
    from eg3d_invert.options import RenderOptions

    cut = np.asarray(Image.open(photos / "astronaut.PNG"))[:132]
    Image.fromarray(np.ascontiguousarray(cut)).save(tmp_path / "cut.png")
    events = []
    inverter = Inverter.from_pretrained(TINY, device="cpu", steps=1, pti_steps=1)
    options = RenderOptions(yaws=(), pitches=(), depth=False, video=False, mesh_formats=())
    outcomes = list(batch.run_batch(inverter, [tmp_path / "cut.png"], tmp_path / "out", options,
                                    progress=lambda name, done, total, info: events.append(("progress", name)),
                                    notice=lambda level, message: events.append((level, message))))
    assert outcomes[0].ok
    warnings = [m for level, m in events if level == "warning"]
    assert warnings and "border:" in warnings[0] and "cut.png" in warnings[0]
    first_warning = events.index(("warning", warnings[0]))
    assert ("progress", "project") in events[first_warning:] and ("progress", "project") not in events[:first_warning]
    d = tmp_path / "out" / "cut"
    camera = json.loads((d / "camera.json").read_text())
    assert camera["pose_warnings"] and camera["pose_warnings"] == camera["aligned"]["pose_warnings"]
    assert json.loads((d / "report.json").read_text())["camera"]["pose_warnings"] == camera["pose_warnings"]
    # and through the CLI: one warning line on stderr
    result = invoke(tmp_path / "cut.png", "--out", tmp_path / "out2", "--network", TINY, "--device", "cpu",
                    "--steps", "1", "--pti-steps", "1", "--views=none", "--no-video", "--mesh", "none")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "border:" in " ".join(result.stderr.split())


def test_invert_prints_the_time_estimate_first(photos, tmp_path, monkeypatch):
    """Before any photo: the expected time per photo, measured (first run) or from the last photo
    with the same settings (second run); the stage bars' remaining times are tested with the
    estimate module."""
    monkeypatch.setenv("EG3D_INVERT_HOME", str(tmp_path / "home"))
    args = ["--network", TINY, "--device", "cpu", "--steps", "2", "--pti-steps", "1", "--views=0", "--no-video",
            "--mesh", "none", "--estimate"]
    first = invoke(photos / "astronaut.PNG", "--out", tmp_path / "a", *args)
    assert first.exit_code == 0, first.output
    text = " ".join(first.stderr.split())
    assert "estimate: ~" in text and "per photo (projection" in text and "measured on this device just now" in text
    assert text.index("estimate:") < text.index("invert")  # before the summary table
    second = invoke(photos / "astronaut.PNG", "--out", tmp_path / "b", *args)
    assert "from the last photo with these settings" in " ".join(second.stderr.split())
    quiet = invoke(photos / "astronaut.PNG", "--out", tmp_path / "c", *args, "--quiet")
    assert "estimate" not in quiet.stderr
