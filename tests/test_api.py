"""The Python API (issue 5): ``Inverter`` and ``InversionResult`` on a real photo with tiny_A.

One :class:`Inverter` and one inversion (of scikit-image's astronaut, 2 projection + 1 tuning
steps) are shared by the module. LPIPS runs its real loading path from a temporary TORCH_HOME
holding random weights under torchvision's file names (:mod:`tests.lpips_weights`), so the
loss values are not perceptual; nothing here depends on them being so.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from eg3d_invert import InversionResult, Inverter
from eg3d_invert.errors import CheckpointError, ConfigError, NoFaceError
from eg3d_invert.inversion import Pivot, Progress, ProjectionSettings, TuningSettings
from eg3d_invert.preprocessing import Aligner

from .conftest import REFERENCE, REPO, require
from .lpips_weights import random_lpips_environment

# AlexNet LPIPS for the projection too (cheaper than VGG; the CLI tests run the VGG default).
STEPS = dict(steps=2, pti_steps=1, projection_lpips="alex")


@pytest.fixture(scope="module", autouse=True)
def torch_home(tmp_path_factory):
    """Random LPIPS backbones in a TORCH_HOME shared by this session's tests (built once)."""
    with random_lpips_environment(tmp_path_factory.getbasetemp() / "torch_home") as home:
        yield home


@pytest.fixture(scope="module")
def photo():
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def inverter():
    return Inverter.from_pretrained(require(REFERENCE / "tiny_A.pkl"), device="cpu", **STEPS)


@pytest.fixture(scope="module")
def events():
    return []


@pytest.fixture(scope="module")
def result(inverter, photo, events):
    return inverter.invert(photo, callback=events.append)


def _pixels(image: PIL.Image.Image) -> np.ndarray:
    return np.asarray(image)


# --- construction and settings -------------------------------------------------------------------


def test_from_pretrained_builds_everything_once(inverter):
    assert inverter.projection.num_steps == 2 and inverter.tuning.num_steps == 1
    assert inverter.projection.space == "w" and inverter.projection.lpips_net == "alex"
    assert set(inverter.lpips) == {"alex"}
    assert all(m.backbone_pretrained for m in inverter.lpips.values())  # loaded from the TORCH_HOME files
    again = Inverter.from_pretrained(REFERENCE / "tiny_A.pkl", device="cpu")
    assert set(again.lpips) == {"vgg", "alex"}
    assert again.lpips["alex"] is inverter.lpips["alex"]  # LPIPS models are shared, not rebuilt
    assert again.projection == ProjectionSettings() and again.tuning == TuningSettings()  # official defaults
    cfg = inverter.config
    assert cfg["checkpoint"]["sha256"] and cfg["checkpoint"]["path"].endswith("tiny_A.pkl")
    json.dumps(cfg)  # JSON-ready


@pytest.mark.parametrize("kwargs, name", [
    (dict(steps=0), "steps"), (dict(pti_steps=-1), "pti_steps"), (dict(projector="z"), "projector"),
    (dict(seed=-1), "seed"), (dict(preset="turbo"), "preset"), (dict(threshold=1.5), "threshold"),
    (dict(five_points="nose"), "five_points"), (dict(padding="zeros"), "padding"),
    (dict(projection_lpips="squeeze"), "projection_lpips"), (dict(camera_refinement="yes"), "camera_refinement"),
    (dict(min_face_size=0), "min_face_size"),
])
def test_bad_settings_name_the_argument(kwargs, name):
    # Validated before anything is loaded: the checkpoint path does not even exist.
    with pytest.raises(ConfigError, match=name):
        Inverter.from_pretrained("/nonexistent/checkpoint.pkl", **kwargs)


def test_missing_device_is_named_before_anything_loads():
    from eg3d_invert.errors import DeviceError

    with pytest.raises(DeviceError, match="'cuda:999' is not available on this machine \\(available: cpu"):
        Inverter.from_pretrained(require(REFERENCE / "tiny_A.pkl"), device="cuda:999")


def test_torch_home_that_cannot_hold_the_lpips_weights_is_one_clear_error(tmp_path, monkeypatch, unwritable_dir):
    from eg3d_invert.errors import MissingWeightsError

    a_file = tmp_path / "torch_home"
    a_file.write_text("not a folder")
    for home in (a_file, unwritable_dir):
        monkeypatch.setenv("TORCH_HOME", str(home))
        with pytest.raises(MissingWeightsError) as info:
            Inverter.from_pretrained(require(REFERENCE / "tiny_A.pkl"), device="cpu")
        message = str(info.value)
        assert "TORCH_HOME" in message and str(home) in message and "\n" not in message


def test_unknown_setting_is_a_type_error():
    with pytest.raises(TypeError, match="stepz"):
        Inverter.from_pretrained("/nonexistent/checkpoint.pkl", stepz=3)


def test_settings_conveniences_and_components(inverter):
    from eg3d_invert.inversion.settings import resolve_settings

    p, t = resolve_settings(projector="w+", steps=7, pti_steps=5, seed=3, camera_refinement=True, tuning_lpips="vgg")
    assert (p.space, p.num_steps, p.seed, p.camera.enabled) == ("w+", 7, 3, True)
    assert (t.num_steps, t.seed, t.camera.enabled, t.lpips_net) == (5, 3, True, "vgg")
    base = ProjectionSettings(num_steps=9, learning_rate=0.02)
    p, _ = resolve_settings(projection=base, seed=None)
    assert p == base
    # diffusers-style: already built components are used as they are
    aligner = Aligner(threshold=0.8)
    custom = Inverter(inverter.generator, aligner, projection=ProjectionSettings(num_steps=3, lpips_net="alex"),
                      lpips={"alex": inverter.lpips["alex"]})
    assert custom.aligner is aligner and custom.lpips["alex"] is inverter.lpips["alex"] and set(custom.lpips) == {"alex"}
    assert custom.config["aligner"]["threshold"] == 0.8
    with pytest.raises(ConfigError, match="generator"):
        Inverter("not a generator")
    with pytest.raises(ConfigError, match="aligner"):
        Inverter(inverter.generator, aligner="mtcnn")


# --- inversion -----------------------------------------------------------------------------------


def test_invert_result_parts(result, inverter):
    G = inverter.generator
    assert result.aligned.image.shape == (512, 512, 3) and result.aligned.label.shape == (25,)
    assert result.pivot.ws.shape == (1, G.num_ws, G.w_dim) and result.camera.shape == (1, 25)
    assert result.pivot.steps == 2 and result.tuning.steps == 1
    assert result.generator is not G  # tuned copy; the base is untouched
    changed = [k for k, v in result.generator.state_dict().items() if not torch.equal(v, G.state_dict()[k])]
    assert changed
    assert set(result.timings) == {"align", "project", "tune", "finalize"} and all(v > 0 for v in result.timings.values())
    m = result.metrics
    assert 0 < m["lpips"] < 2 and m["lpips_net"] == "alex" and m["resolution"] == G.img_resolution
    assert np.isfinite(m["psnr_db"])
    # The tiny generator's render is no face: the identity entry says so instead of a number.
    ident = m["identity"]
    assert ident["network"] == "dlib_face_recognition_resnet_model_v1"
    rec = ident["reconstruction"]
    assert (rec["similarity"] is None and rec["note"] == "no face found in the render") or \
        -1 <= rec["similarity"] <= 1
    assert "lpips=" in repr(result) and "project_steps=2" in repr(result)


def test_callback_sees_every_stage_in_order(events):
    assert all(isinstance(e, Progress) for e in events)
    stages = [e.stage for e in events]
    assert stages == ["align", "align", "project", "project", "project", "tune", "tune", "finalize", "finalize"]
    starts = [e for e in events if e.step == 0]
    assert [(e.stage, e.total) for e in starts] == [("align", 1), ("project", 2), ("tune", 1), ("finalize", 1)]
    assert events[1].extra["aligned"].label.shape == (25,)
    assert all(np.isfinite(e.loss) for e in events if e.stage in ("project", "tune") and e.step > 0)


def test_renders_are_deterministic_and_follow_the_angles(result, inverter):
    size = inverter.generator.img_resolution
    front = result.render()
    assert isinstance(front, PIL.Image.Image) and front.size == (size, size) and front.mode == "RGB"
    np.testing.assert_array_equal(_pixels(front), _pixels(result.render(0, 0)))
    assert not np.array_equal(_pixels(front), _pixels(result.render(yaw=30)))
    # the scene (planes) is computed once and reused
    assert result.scene.planes.shape[:2] == (1, 3)
    grid = result.views([-20, 0, 20], 5)
    assert grid.size[0] > 3 * size and grid.size[1] > size
    depth = result.depth(yaw=10)
    r = inverter.generator.neural_rendering_resolution
    assert depth.shape == (r, r) and depth.dtype == np.float32
    assert np.all((depth > 2.0) & (depth < 3.5))  # distance along rays from a camera 2.7 units away
    recon = result.reconstruction()
    assert recon.size == (size, size)


def test_photo_input_kinds(inverter, photo, tmp_path):
    path = tmp_path / "p.jpg"
    PIL.Image.fromarray(photo).save(path, quality=95)
    buf = io.BytesIO()
    PIL.Image.fromarray(photo).save(buf, format="PNG")
    from_array = inverter.align(photo)
    from_bytes = inverter.align(buf.getvalue())
    np.testing.assert_array_equal(from_bytes.image, from_array.image)  # PNG is lossless
    from_path = inverter.align(path)
    assert abs(from_path.yaw - from_array.yaw) < 1 and from_path.source == str(path)


def test_no_face_raises(inverter):
    with pytest.raises(NoFaceError, match="no face"):
        inverter.invert(np.full((200, 240, 3), 120, np.uint8))


# --- outputs -------------------------------------------------------------------------------------


def test_mesh_nonempty_coloured_inside_the_box(result):
    mesh = result.mesh(resolution=40, level=4.0)  # tiny_A's density barely reaches the official 10
    assert len(mesh.vertices) > 100 and len(mesh.faces) > 100
    colors = np.asarray(mesh.visual.vertex_colors)
    assert colors.shape == (len(mesh.vertices), 4) and len(np.unique(colors[:, :3], axis=0)) > 10
    half = result.scene.box_warp / 2
    assert np.all(np.abs(mesh.bounds) <= half)


def test_video(result, tmp_path):
    import imageio.v2 as imageio

    info = result.video(tmp_path / "orbit.mp4", frames=3, fps=10)
    reader = imageio.get_reader(info.path)
    try:
        size = result.generator.img_resolution
        assert reader.count_frames() == 3 and reader.get_data(0).shape == (size, size, 3)
    finally:
        reader.close()
    assert not list(tmp_path.glob(".orbit*"))  # no temporary file left


def test_save_load_round_trip(result, tmp_path, inverter):
    files = result.save(tmp_path / "r")
    expected = {"aligned.png", "camera.json", "pivot.pt", "pivot.npy", "tuned.safetensors", "reconstruction.png"}
    assert set(files) == expected and all((tmp_path / "r" / f).stat().st_size == n for f, n in files.items())
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["files"] == files and report["metrics"] == result.metrics
    assert report["settings"]["checkpoint"]["sha256"] == inverter.checkpoint["sha256"]
    assert report["versions"]["torch"] == importlib.metadata.version("torch")
    assert len(report["losses"]["project"]["loss"]) == 2
    camera = json.loads((tmp_path / "r" / "camera.json").read_text())
    assert len(camera["label"]) == 25 and camera["aligned"]["label"] == [float(v) for v in result.aligned.label]

    # EG3D-projector's ws array, as its tools read it
    np.testing.assert_array_equal(np.load(tmp_path / "r" / "pivot.npy"), result.pivot.ws.numpy())
    assert torch.equal(Pivot.load(tmp_path / "r" / "pivot.npy").ws, result.pivot.ws)

    loaded = InversionResult.load(tmp_path / "r")
    assert torch.equal(loaded.pivot.ws, result.pivot.ws) and torch.equal(loaded.camera, result.camera)
    np.testing.assert_array_equal(loaded.aligned.image, result.aligned.image)
    np.testing.assert_array_equal(loaded.aligned.label, result.aligned.label)
    for k, v in result.generator.state_dict().items():
        assert torch.equal(loaded.generator.state_dict()[k], v), k
    for yaw, pitch in ((0, 0), (25, -10)):
        np.testing.assert_array_equal(_pixels(loaded.render(yaw, pitch)), _pixels(result.render(yaw, pitch)))
    np.testing.assert_array_equal(loaded.depth(yaw=10), result.depth(yaw=10))
    assert loaded.metrics == result.metrics and loaded.timings.keys() == result.timings.keys()

    # a loaded result saves again (it kept its base), with the same inversion files
    again = loaded.save(tmp_path / "r2")
    for name in ("aligned.png", "reconstruction.png", "camera.json"):
        assert (tmp_path / "r2" / name).read_bytes() == (tmp_path / "r" / name).read_bytes(), name
    assert torch.equal(Pivot.load(tmp_path / "r2" / "pivot.pt").ws, result.pivot.ws)
    assert again.keys() == files.keys()
    # the base given explicitly, as a generator
    explicit = InversionResult.load(tmp_path / "r2", base=inverter.generator)
    np.testing.assert_array_equal(_pixels(explicit.render(30)), _pixels(result.render(30)))


def test_load_errors(tmp_path, result):
    with pytest.raises(CheckpointError, match="report.json"):
        InversionResult.load(tmp_path)
    result.save(tmp_path / "r")
    (tmp_path / "r" / "pivot.pt").unlink()
    with pytest.raises(CheckpointError, match="pivot.pt"):
        InversionResult.load(tmp_path / "r")


def test_run_batch_refuses_an_unwritable_folder_before_any_photo(inverter, tmp_path):
    from eg3d_invert.batch import run_batch
    from eg3d_invert.errors import OutputError
    from eg3d_invert.options import RenderOptions

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        next(run_batch(inverter, [tmp_path / "photo.png"], blocker / "out", RenderOptions()))


def test_import_stays_cheap():
    code = ("import sys, eg3d_invert; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'Inverter' in dir(eg3d_invert); print(eg3d_invert.__version__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_fast_preset_reaches_both_stages():
    from eg3d_invert.inversion.settings import resolve_settings

    proj, tun = resolve_settings(preset="fast", pti_steps=20)
    assert (proj.num_steps, proj.coarse_steps, tun.num_steps, tun.learning_rate) == (200, 200, 20, 6e-4)
    assert tun.sample_mult == 1.0 and proj.deterministic_render


def test_allocator_setting_is_process_wide_idempotent_and_can_be_refused():
    """Inverter on a CPU asks glibc to reuse freed memory (devices.reuse_freed_memory); the
    environment variable refuses it. In subprocesses: the setting lasts for the process."""
    code = ("import eg3d_invert.devices as d; a = d.reuse_freed_memory(); b = d.reuse_freed_memory(); "
            "assert a == b; print(a)")
    import platform

    on = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert on.returncode == 0, on.stderr
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert on.stdout.strip() == str(glibc)
    env = {**__import__("os").environ, "EG3D_INVERT_KEEP_MALLOC": "1"}
    off = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert off.returncode == 0 and off.stdout.strip() == "False", off.stderr
