"""Inversion (issue 4): projection, pivotal tuning, results on disk, guards, LPIPS weights.

Everything runs on the tiny_A reference checkpoint with a handful of steps. LPIPS is built with a
*random* ImageNet backbone (``load_lpips(..., pretrained_backbone=False)``, i.e. lpips'
``pnet_rand=True``) because the real torchvision weights are not on this machine: the numbers
are not perceptual, but the code path and the optimisation are the real ones. One test instead
saves random weights under torchvision's file name in a temporary TORCH_HOME, so that the real
hub-cache loading path runs.
"""

from __future__ import annotations

import math
import urllib.error

import numpy as np
import pytest
import torch

from eg3d_invert.camera import FFHQ_PIVOT, Camera, label_angles
from eg3d_invert.errors import CheckpointError, ConfigError, InterruptedRun, MissingWeightsError, NonFiniteLossError
from eg3d_invert.inversion import (CameraCorrection, CameraRefinementSettings, PerceptualDistance, Pivot,
                                   ProjectionSettings, TuningSettings, learning_rate_at, load_lpips,
                                   noise_regularization, prepare_image, project, tune)
from eg3d_invert.inversion import losses
from eg3d_invert.pretrained import load_generator

from .conftest import REFERENCE, require

# Cheap settings: few steps, one depth-sample multiplier, no depth jitter (so renders compare
# exactly), AlexNet LPIPS (cheaper than VGG) and a peak lr reached at once.
FAST_PROJ = ProjectionSettings(num_steps=3, lr_rampup=0.0, learning_rate=0.05, w_avg_samples=64,
                               sample_mult=1, deterministic_render=True, lpips_net="alex")
FAST_TUNE = TuningSettings(num_steps=6, learning_rate=2e-3, sample_mult=1, deterministic_render=True,
                           l2_weight=0.0, lpips_threshold=0.0)
RENDER = dict(sample_mult=1, deterministic=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here: on 2 cores shared with other jobs, a projection step took
    0.8-1.4 s with 1 thread and 4.7-5.7 s with 2 (load ~7; threads wait on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def G():
    return load_generator(require(REFERENCE / "tiny_A.pkl"))


@pytest.fixture(scope="module")
def alex():
    return load_lpips("alex", pretrained_backbone=False)  # random backbone: see module docstring


@pytest.fixture(scope="module")
def scene(G):
    """A target rendered by tiny_A from known ws and a known camera (yaw 10, pitch 5 degrees)."""
    cam = Camera.from_angles(10.0, 5.0)
    with torch.no_grad():
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(7))
        ws = G.mapping(z, cam.label, truncation_psi=0.7)
        image = G.synthesis(ws, cam.label, **RENDER)["image"]
    return image, cam


@pytest.fixture(scope="module")
def pivot(G, scene, alex):
    image, cam = scene
    return project(G, image, cam, settings=FAST_PROJ, lpips_model=alex)


@pytest.fixture(scope="module")
def tuned(G, scene, pivot, alex):
    image, cam = scene
    return tune(G, pivot, image, cam, settings=FAST_TUNE.replace(num_steps=1), lpips_model=alex)


def _lpips_of(G, pivot, image, model, **kw):
    with torch.no_grad():
        return float(PerceptualDistance(model, image)(pivot.render(G, **RENDER, **kw)["image"]))


# --- settings, schedule, losses ------------------------------------------------------------------


def test_settings_defaults_are_the_official_ones():
    p, t = ProjectionSettings(), TuningSettings()
    assert (p.num_steps, p.w_avg_samples, p.learning_rate, p.lr_rampup, p.lr_rampdown) == (500, 600, 0.01, 0.05, 0.25)
    assert (p.initial_noise_factor, p.noise_ramp, p.noise_regularization) == (0.05, 0.75, 1e5)
    assert (p.loss_resolution, p.lpips_net, p.sample_mult, p.space, p.w_avg_seed) == (256, "vgg", 2.0, "w", 123)
    assert (t.num_steps, t.learning_rate, t.l2_weight, t.lpips_weight, t.lpips_threshold) == (350, 3e-4, 1, 1, 0.06)
    assert (t.lpips_net, t.locality_regularization, t.sample_mult) == ("alex", False, 2.0)
    assert (t.locality_alpha, t.locality_l2_weight, t.locality_lpips_weight, t.locality_truncation) == (30, .1, .1, .5)
    assert ProjectionSettings.from_preset("official") == p and TuningSettings.from_preset("official") == t


def test_fast_preset_is_coarse_to_fine_and_keeps_the_losses():
    p, t = ProjectionSettings.from_preset("fast"), TuningSettings.from_preset("fast")
    official = ProjectionSettings(), TuningSettings()
    assert (p.num_steps, p.coarse_steps, t.num_steps, t.coarse_steps) == (200, 200, 80, 0)
    assert p.deterministic_render and t.deterministic_render and t.sample_mult == 1.0
    # Everything else (losses, noise schedule, LPIPS nets, early stop) stays official.
    assert p.replace(num_steps=500, coarse_steps=0, deterministic_render=False) == official[0]
    assert t.replace(num_steps=350, learning_rate=3e-4, sample_mult=2.0, deterministic_render=False) == official[1]
    assert ProjectionSettings.from_preset("fast", num_steps=200).num_steps == 200


def test_step_overrides_keep_the_share_of_coarse_steps():
    from eg3d_invert.inversion.settings import resolve_settings

    proj, tun = resolve_settings(preset="fast", steps=3, pti_steps=5)
    assert (proj.num_steps, proj.coarse_steps) == (3, 3)  # an all-coarse projection stays all coarse
    assert (tun.num_steps, tun.coarse_steps) == (5, 0)
    part = ProjectionSettings(num_steps=100, coarse_steps=40)
    proj, _ = resolve_settings(projection=part, steps=10)
    assert (proj.num_steps, proj.coarse_steps) == (10, 4)
    proj, _ = resolve_settings(preset="official", steps=7)
    assert (proj.num_steps, proj.coarse_steps) == (7, 0)


def test_settings_json_round_trip_and_validation():
    s = ProjectionSettings(space="w+", num_steps=7, camera=CameraRefinementSettings(enabled=True))
    assert ProjectionSettings.from_json(s.to_json()) == s
    t = TuningSettings(locality_regularization=True, camera=CameraRefinementSettings(enabled=True, prior_weight=2.0))
    assert TuningSettings.from_dict(t.to_dict()) == t
    for bad in (dict(space="z"), dict(num_steps=0), dict(learning_rate=float("nan")), dict(lpips_net="squeeze"),
                dict(init="search", init_candidates=0), dict(betas=(0.9,))):
        with pytest.raises(ConfigError):
            ProjectionSettings(**bad)
    with pytest.raises(ConfigError, match="unknown setting"):
        TuningSettings.from_dict({"num_step": 3})
    with pytest.raises(ConfigError, match="preset"):
        TuningSettings.from_preset("turbo")
    with pytest.raises(ConfigError, match="lpips_weight"):
        TuningSettings(l2_weight=0, lpips_weight=0)


def test_learning_rate_schedule_matches_the_projector_formula():
    n = 500
    for step in (0, 10, 25, 100, 375, 400, 499):
        t = step / n
        ramp = 0.5 - 0.5 * math.cos(min(1.0, (1 - t) / 0.25) * math.pi)
        expected = 0.01 * ramp * min(1.0, t / 0.05)
        assert learning_rate_at(step, n, 0.01, 0.05, 0.25) == pytest.approx(expected, abs=1e-12)
    assert learning_rate_at(0, n, 0.01, 0.05, 0.25) == 0.0
    assert learning_rate_at(100, n, 0.01, 0.05, 0.25) == pytest.approx(0.01)


def test_perceptual_distance_equals_lpips(alex):
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1, torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    assert float(PerceptualDistance(alex, b)(a)) == pytest.approx(float(alex(a, b)), rel=1e-5)
    # Downsampling happens on both sides, like the projector's 256x256 area resize.
    big = torch.nn.functional.interpolate(a, size=(128, 128), mode="nearest")
    assert float(PerceptualDistance(alex, big, 64)(big)) == pytest.approx(0.0, abs=1e-6)


def test_noise_regularization_penalises_structure_not_white_noise():
    g = torch.Generator().manual_seed(0)
    white = [torch.randn(64, 64, generator=g), torch.randn(32, 32, generator=g)]
    # Maps made of 2x2 blocks: neighbouring pixels are equal half of the time.
    smooth = [torch.nn.functional.interpolate(torch.randn(1, 1, n, n, generator=g), scale_factor=2)[0, 0]
              for n in (32, 16)]
    assert float(noise_regularization(white)) < 1e-2 < float(noise_regularization(smooth))


def test_prepare_image_accepts_uint8_and_float():
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[..., 0] = 255
    t = prepare_image(arr, 32)
    assert t.shape == (1, 3, 32, 32) and t.dtype == torch.float32
    assert float(t[0, 0].min()) == pytest.approx(1.0) and float(t[0, 1].max()) == pytest.approx(-1.0)
    assert prepare_image(torch.zeros(3, 32, 32), 32).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="square"):
        prepare_image(np.zeros((64, 48, 3), np.uint8), 32)
    with pytest.raises(TypeError):
        prepare_image(np.zeros((32, 32, 3), np.float32), 32)


def test_camera_correction_conventions():
    label = Camera.from_angles(10.0, 5.0).label
    corr = CameraCorrection(rotation_sigma_deg=2.0, translation_sigma=0.01, pivot=FFHQ_PIVOT)
    with torch.no_grad():
        assert torch.allclose(corr(label), label, atol=1e-6)
        corr.delta[0] = 1.0  # +2 degrees of yaw: the camera moves toward +x
        yaw, pitch = label_angles(corr(label))
        assert yaw[0] > 11.5 and abs(pitch[0] - 5.0) < 0.2
        corr.delta.zero_()
        corr.delta[1] = 1.0  # +2 degrees of pitch: the camera moves up
        yaw, pitch = label_angles(corr(label))
        assert pitch[0] > 6.5 and abs(yaw[0] - 10.0) < 0.2
        assert float(corr.prior()) == pytest.approx(0.5)


# --- LPIPS weights ---------------------------------------------------------------------------------


def _no_network(monkeypatch):
    calls = []

    def fail(url, *a, **k):
        calls.append(url)
        raise urllib.error.URLError("network is off in tests")

    monkeypatch.setattr(losses, "_download_url_to_file", fail)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    monkeypatch.setattr("urllib.request.urlopen", fail)
    return calls


def test_missing_lpips_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = _no_network(monkeypatch)
    expected = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    with pytest.raises(MissingWeightsError) as err:
        load_lpips("vgg")
    msg = str(err.value)
    assert str(expected) in msg and "https://download.pytorch.org/models/vgg16-397923af.pth" in msg
    assert "download failed" in msg and not expected.exists()
    assert calls == ["https://download.pytorch.org/models/vgg16-397923af.pth"]
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth.*disabled"):
        load_lpips("alex", download=False)


def test_lpips_backbone_loads_from_the_hub_cache_without_network(tmp_path, monkeypatch):
    # Random AlexNet weights saved under torchvision's file name: the real loading path runs.
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = _no_network(monkeypatch)
    net = torchvision.models.alexnet(weights=None)
    path = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    model = load_lpips("alex")
    assert calls == [] and model.backbone_pretrained and model.backbone_path == str(path)
    assert torch.equal(model.net.slice1.get_submodule("0").weight, net.features[0].weight)
    assert torch.equal(model.net.slice5.get_submodule("10").bias, net.features[10].bias)
    assert not any(p.requires_grad for p in model.parameters())
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(MissingWeightsError, match="unreadable"):
        load_lpips("alex")


# --- projection ------------------------------------------------------------------------------------


def test_projection_lowers_the_loss(G, scene, pivot, alex):
    image, cam = scene
    start = Pivot(ws=G.w_avg.reshape(1, 1, -1).expand(1, G.num_ws, -1).clone(), camera=cam.label,
                  noise=pivot.noise)
    before, after = _lpips_of(G, start, image, alex), _lpips_of(G, pivot, image, alex)
    assert after < 0.9 * before, (before, after)
    assert pivot.history[-1]["lpips"] < pivot.history[0]["lpips"]
    assert pivot.steps == 3 and pivot.stop_reason == "completed" and len(pivot.history) == 3


def test_w_and_w_plus_shapes(G, scene, pivot, alex):
    assert pivot.ws.shape == (1, G.num_ws, G.w_dim) and pivot.space == "w"
    assert torch.equal(pivot.ws, pivot.ws[:, :1].expand_as(pivot.ws))  # one w repeated
    image, cam = scene
    plus = project(G, image, cam, "w+", settings=FAST_PROJ.replace(num_steps=1), lpips_model=alex)
    assert plus.ws.shape == (1, G.num_ws, G.w_dim) and plus.space == "w+"
    assert not torch.equal(plus.ws[:, 0], plus.ws[:, -1])  # each layer moved on its own


def test_projection_is_deterministic_and_a_callback_can_stop_it(G, scene, pivot, alex):
    image, cam = scene
    seen = []

    def stop_at_once(progress):
        seen.append((progress.stage, progress.step, progress.total))
        assert progress.extra["snapshot"]().steps == 1
        return True

    # Same seed, same settings: the first step is that of the fixture's run ...
    short = project(G, image, cam, settings=FAST_PROJ, lpips_model=alex, callback=stop_at_once)
    assert seen == [("project", 1, 3)] and short.stop_reason == "callback" and short.steps == 1
    assert short.history[0] == pivot.history[0]
    # ... and a different seed gives a different trajectory.
    other = project(G, image, cam, settings=FAST_PROJ.replace(num_steps=1, seed=1), lpips_model=alex)
    assert other.history[0]["loss"] != pivot.history[0]["loss"]


def test_keyboard_interrupt_gives_interrupted_run_with_partial_pivot(G, scene, alex):
    image, cam = scene
    before = {k: v.clone() for k, v in G.state_dict().items()}

    def interrupt(progress):
        raise KeyboardInterrupt

    with pytest.raises(InterruptedRun, match="1/3") as err:
        project(G, image, cam, settings=FAST_PROJ, lpips_model=alex, callback=interrupt)
    partial = err.value.partial
    assert isinstance(partial, Pivot) and partial.steps == 1 and partial.stop_reason == "interrupted"
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the caller's G never changes


def test_keyboard_interrupt_during_tuning(G, scene, pivot, alex):
    image, cam = scene

    def interrupt(progress):
        raise KeyboardInterrupt

    with pytest.raises(InterruptedRun, match="tuning interrupted after 1/6") as err:
        tune(G, pivot, image, cam, settings=FAST_TUNE, lpips_model=alex, callback=interrupt)
    partial = err.value.partial
    assert partial.steps == 1 and partial.stop_reason == "interrupted" and partial.generator is not G
    assert not any(p.requires_grad for p in partial.generator.parameters())


# --- tuning ----------------------------------------------------------------------------------------


def test_tuning_lowers_the_loss_further_and_stops_at_the_threshold(G, scene, pivot, alex):
    image, cam = scene
    start = _lpips_of(G, pivot, image, alex, use_noise=False)  # tuning starts from G's own noise
    threshold = 0.95 * start
    result = tune(G, pivot, image, cam, settings=FAST_TUNE.replace(lpips_threshold=threshold), lpips_model=alex)
    lp = [h["lpips"] for h in result.history]
    assert lp[0] == pytest.approx(start, rel=1e-4)
    assert result.stop_reason == "threshold", lp
    assert lp[-1] <= threshold < min(lp[:-1])
    assert result.steps == len(lp) - 1  # the last render was only checked, not stepped on
    with torch.no_grad():
        final = float(PerceptualDistance(alex, image)(result.render(**RENDER)["image"]))
    assert final == pytest.approx(lp[-1], rel=1e-4) and final < start


def test_tuning_rate_decays_over_the_rampdown_only(G, scene, pivot, alex):
    image, cam = scene
    settings = FAST_TUNE.replace(lpips_threshold=0.0, num_steps=8, learning_rate=2e-3, lr_rampdown=0.5)
    result = tune(G, pivot, image, cam, settings=settings, lpips_model=alex)
    lrs = [h["lr"] for h in result.history]
    assert lrs[:5] == [2e-3] * 5  # constant until the last half has begun
    assert all(a > b > 0 for a, b in zip(lrs[4:], lrs[5:]))  # then a strictly falling cosine
    assert lrs[-1] == pytest.approx(2e-3 * learning_rate_at(7, 8, 1.0, 0.0, 0.5))
    constant = tune(G, pivot, image, cam, settings=settings.replace(lr_rampdown=0.0, num_steps=3), lpips_model=alex)
    assert [h["lr"] for h in constant.history] == [2e-3] * 3  # PTI's constant rate by default
    assert TuningSettings().lr_rampdown == 0.0


def test_tuning_leaves_the_base_untouched(G, tuned):
    base = G.state_dict()
    new = tuned.generator.state_dict()
    changed = [k for k in base if not torch.equal(base[k], new[k])]
    assert changed and all(not p.requires_grad for p in G.parameters())
    assert all(not k.startswith("backbone.mapping") for k in changed)  # ws are fixed: mapping gets no gradient
    assert tuned.base is G and tuned.stop_reason == "max_steps" and tuned.steps == 1


def test_locality_and_camera_refinement_run(G, scene, pivot, alex):
    image, cam = scene
    cam_off = Camera.from_angles(12.0, 4.0)  # the "estimate" is 2 degrees off
    settings = FAST_TUNE.replace(num_steps=2, locality_regularization=True,
                                 camera=CameraRefinementSettings(enabled=True, learning_rate=0.5))
    result = tune(G, pivot, image, cam_off, settings=settings, lpips_model=alex)
    # At the first step the tuned copy still equals the original: both renders of the moved
    # latent then agree (same noise mode, no depth jitter) up to kernel-layout rounding, since
    # the frozen copy runs without autograd and may take a different memory layout.
    assert result.history[0]["locality"] < 1e-9 < result.history[1]["locality"]
    corr = result.camera_correction
    assert set(corr) == {"yaw_deg", "pitch_deg", "roll_deg", "translation", "pivot"} and corr["yaw_deg"] != 0
    assert not torch.equal(result.pivot.camera, pivot.camera)


# --- guards ----------------------------------------------------------------------------------------


def test_nan_guard_names_the_step(G, scene, pivot, alex):
    image, cam = scene
    poisoned = image.clone()
    poisoned[0, :, 5, 5] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"projection: .*step 1/3"):
        project(G, poisoned, cam, settings=FAST_PROJ, lpips_model=alex)
    with pytest.raises(NonFiniteLossError, match=r"tuning: .*step 1/6"):
        tune(G, pivot, poisoned, cam, settings=FAST_TUNE, lpips_model=alex)


# --- results on disk -------------------------------------------------------------------------------


def test_pivot_files_are_checked(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="not an eg3d-invert pivot"):
        Pivot.load(bad)
    np.save(tmp_path / "y.npy", np.zeros((14, 512, 2), np.float32))
    with pytest.raises(CheckpointError, match="shape"):
        Pivot.load(tmp_path / "y.npy")
    with pytest.raises(CheckpointError, match="no such"):
        Pivot.load(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="25"):
        Pivot(ws=torch.zeros(1, 14, 512), camera=torch.zeros(16))


def test_saved_results_render_identically(G, tuned, tmp_path):
    pivot = tuned.pivot
    ref_pivot = pivot.render(G, **RENDER)["image"]
    ref_tuned = tuned.render(**RENDER)["image"]

    pivot.save(tmp_path / "p.pt")
    loaded = Pivot.load(tmp_path / "p.pt")
    raw = torch.load(tmp_path / "p.pt", weights_only=True)  # plain data only
    assert raw["format"] == "eg3d-invert/pivot" and loaded.space == "w" and loaded.history == pivot.history
    assert torch.equal(loaded.render(G, **RENDER)["image"], ref_pivot)

    pivot.save(tmp_path / "p_w.npy")
    arr = np.load(tmp_path / "p_w.npy")
    assert arr.shape == (1, 14, 512) and arr.dtype == np.float32
    from_npy = Pivot.load(tmp_path / "p_w.npy", camera=pivot.camera)
    assert torch.equal(from_npy.render(G, use_noise=False, **RENDER)["image"],
                       pivot.render(G, use_noise=False, **RENDER)["image"])

    delta = tuned.save_generator(tmp_path / "tuned.safetensors")
    G2 = load_generator(delta, base=G.checkpoint_path)
    with torch.no_grad():
        img2 = G2.synthesis(loaded.ws, loaded.camera, **RENDER)["image"]
    assert torch.equal(img2, ref_tuned)
    assert delta.stat().st_size < 0.9 * sum(v.numel() * 4 for v in G.state_dict().values())  # a delta, not a copy

    pth = tuned.export_pth(tmp_path / "tuned.pth")
    assert set(torch.load(pth, weights_only=True)) == {"G_ema"}
    G3 = load_generator(pth, base=G)
    with torch.no_grad():
        assert torch.equal(G3.synthesis(loaded.ws, loaded.camera, **RENDER)["image"], ref_tuned)


def test_camera_refinement_orbits_the_point_the_renders_look_at(G, scene, alex):
    """One camera sphere per checkpoint: without ``avg_camera_pivot`` the refinement of both
    stages turns about the same (official default) point that rendered views look at."""
    import copy

    from eg3d_invert.render import Scene

    bare = copy.deepcopy(G)
    bare.rendering_kwargs = {k: v for k, v in G.rendering_kwargs.items()
                             if k not in ("avg_camera_pivot", "avg_camera_radius")}
    image, cam = scene
    refine = CameraRefinementSettings(enabled=True)
    pivot = project(bare, image, cam, settings=FAST_PROJ.replace(num_steps=1, camera=refine), lpips_model=alex)
    tuned = tune(bare, pivot, image, settings=FAST_TUNE.replace(num_steps=1, camera=refine), lpips_model=alex)
    looked_at = list(Scene.from_ws(bare, pivot.ws).lookat)
    assert pivot.camera_correction["pivot"] == looked_at and tuned.camera_correction["pivot"] == looked_at
    assert Scene.from_ws(G, pivot.ws).lookat == (0.0, 0.0, 0.2)  # the checkpoint's own value when it has one
