"""Rendering outputs on the tiny_A reference checkpoint: views, depth, video (fast, CPU)."""

from __future__ import annotations

import functools

import numpy as np
import PIL.Image
import pytest
import torch

from eg3d_invert.pretrained import load_generator
from eg3d_invert.generator import rendering
from eg3d_invert.render import (DepthMaps, Scene, colorize_depth, render_depth, render_orbit_video,
                                 render_views)
from eg3d_invert.render.views import image_grid, view_stem

from .conftest import REFERENCE, reference_npz, require


@functools.lru_cache(maxsize=None)
def tiny_a_scene() -> Scene:
    """tiny_A with the first reference latent, planes computed once for all render tests."""
    G = load_generator(require(REFERENCE / "tiny_A.pkl"))
    ws = torch.from_numpy(reference_npz("tiny_A")["ws"][:1]).float()
    return Scene.from_ws(G, ws)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return tiny_a_scene()


def _leftovers(directory):
    return sorted(p.name for p in directory.rglob(".*"))  # atomic_path temporaries start with a dot


def test_scene_defaults_come_from_the_checkpoint(scene):
    assert scene.lookat == (0.0, 0.0, 0.2) and scene.radius == 2.7 and scene.box_warp == 1.0
    assert tuple(scene.planes.shape) == (1, 3, 32, 256, 256)
    with pytest.raises(ValueError, match="planes"):
        Scene(scene.generator, scene.planes[0], scene.ws)


def test_angle_convention_yaw_toward_subject_left_pitch_above(scene):
    c2w = scene.cameras([30.0, 0.0], [0.0, 20.0]).cam2world
    assert c2w[0, 0, 3] > 0.5 and abs(c2w[0, 1, 3]) < 1e-5   # yaw +30: camera toward +x
    assert c2w[1, 1, 3] > 0.5 and abs(c2w[1, 0, 3]) < 1e-5   # pitch +20: camera above (+y)
    with pytest.raises(ValueError, match="pitch"):
        scene.cameras(0.0, 95.0)
    with pytest.raises(ValueError, match="yaw 200"):
        scene.cameras(200.0, 0.0)
    assert scene.cameras([-180.0, 180.0], 0.0).cam2world.shape == (2, 4, 4)


def test_views_render_grid_and_save(scene, tmp_path):
    calls = []
    views = render_views(scene, [-20.0, 0.0, 20.0], 5.0, resolution=16, sample_mult=1, batch_size=2,
                         progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 3), (3, 3)]
    assert len(views) == 3 and all(im.size == (128, 128) and im.mode == "RGB" for im in views.images)
    assert views.depth.shape == (3, 16, 16) and np.isfinite(views.depth).all()
    np.testing.assert_array_equal(views.pitches, [5.0, 5.0, 5.0])
    assert views.labels[0] == "yaw -20°  pitch +5°"
    one_row = views.grid(padding=4)
    assert one_row.width == 3 * (128 + 4) + 4 and one_row.height > 128 + 8   # caption strip below
    two_cols = views.grid(ncols=2, labels=False, padding=0)
    assert two_cols.size == (256, 256)
    paths = views.save(tmp_path / "views")
    assert [p.name for p in paths] == [f"{view_stem(y, 5.0)}.png" for y in (-20, 0, 20)] + ["views.png"]
    assert PIL.Image.open(paths[1]).size == (128, 128)
    assert _leftovers(tmp_path) == []


def test_views_are_deterministic_renders_of_the_generator(scene):
    """Default deterministic sampling: a view is exactly the generator's deterministic render,
    so re-rendering a saved result reproduces it."""
    a = render_views(scene, [15.0], [0.0], resolution=16, sample_mult=1)
    label = scene.cameras(15.0, 0.0).label
    with torch.no_grad():
        ref = scene.generator.render(scene.planes, label, scene.ws, deterministic=True,
                                     neural_rendering_resolution=16)["image"]
    ref = (ref[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    assert np.array_equal(np.asarray(a.images[0]), ref)


def test_image_grid_rejects_mixed_sizes():
    with pytest.raises(ValueError, match="same|must be"):
        image_grid([PIL.Image.new("RGB", (8, 8)), PIL.Image.new("RGB", (9, 8))])


def _density_only_reference(scene, labels, resolution):
    """Depth and opacity marched independently of the generator's renderer: coarse samples,
    importance samples and midpoint compositing of the raw density alone (sample_mult 1)."""
    G, rk = scene.generator, scene.generator.rendering_kwargs
    origins, dirs = rendering.generate_rays(labels[:, :16].reshape(-1, 4, 4), labels[:, 16:].reshape(-1, 3, 3),
                                            resolution)

    def sigma(t):
        pts = (origins.unsqueeze(-2) + t.unsqueeze(-1) * dirs.unsqueeze(-2)).reshape(1, -1, 3)
        return G.sample_planes(scene.planes, pts, need_rgb=False)["sigma"].reshape(t.shape)

    with torch.no_grad():
        t = rendering.stratified_depths(origins, dirs, rk["ray_start"], rk["ray_end"], rk["depth_resolution"],
                                        deterministic=True)
        s = sigma(t)
        fine = rendering.importance_depths(t, rendering.interval_weights(s, t), rk["depth_resolution_importance"],
                                           deterministic=True)
        t, order = torch.sort(torch.cat([t, fine], -1), -1)
        s = torch.gather(torch.cat([s, sigma(fine)], -1), -1, order)
        w = rendering.interval_weights(s, t)
    depth = rendering.composite_depth(w, t).clamp(t.min(), t.max())
    return depth.reshape(-1, resolution, resolution), w.sum(-1).reshape(-1, resolution, resolution)


def test_depth_and_opacity_come_from_the_one_renderer_and_save(scene, tmp_path):
    yaws, pitches = [-25.0, 10.0], [0.0, -8.0]
    labels = scene.cameras(yaws, pitches).label
    with torch.no_grad():
        out = scene.generator.render(scene.planes, labels, scene.ws, deterministic=True, neural_rendering_resolution=16,
                                     run_superresolution=False)
    depth, alpha = out["image_depth"][:, 0], out["image_opacity"][:, 0]
    ref_depth, ref_alpha = _density_only_reference(scene, labels, 16)
    torch.testing.assert_close(depth, ref_depth, atol=2e-5, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-5, rtol=0)
    assert float(alpha.min()) >= 0 and float(alpha.max()) <= 1 and float(alpha.max()) > 0.5

    maps = render_depth(scene, yaws, pitches, resolution=16, sample_mult=1)
    np.testing.assert_array_equal(maps.depth, depth.numpy())
    np.testing.assert_array_equal(maps.opacity, alpha.numpy())
    # The views carry the same maps: no second pass is needed for them.
    views = render_views(scene, yaws, pitches, resolution=16, sample_mult=1, batch_size=2)
    from_views = DepthMaps.from_views(views)
    np.testing.assert_array_equal(from_views.depth, maps.depth)
    np.testing.assert_array_equal(from_views.opacity, maps.opacity)
    near, far = maps.range()
    assert 2.25 <= near < far <= 3.3  # inside the FFHQ ray range
    paths = maps.save(tmp_path / "depth")
    assert len(paths) == 6 and _leftovers(tmp_path) == []
    np.testing.assert_array_equal(np.load(paths[1]), maps.depth[0])
    assert PIL.Image.open(paths[0]).size == (16, 16)


def test_depth_colormap_nearer_is_brighter_background_black():
    depth = np.linspace(2.4, 3.0, 64, dtype=np.float32)[None].repeat(4, 0)
    mask = np.ones_like(depth, dtype=bool)
    mask[:, -4:] = False
    rgb = colorize_depth(depth, mask).astype(float)
    luma = rgb[0, :-4] @ [0.299, 0.587, 0.114]
    assert luma[0] > 200 and luma[-1] < 40 and np.all(np.diff(luma) <= 1e-9)
    assert (rgb[:, -4:] == 0).all()


def test_video_written_atomically_and_readable(scene, tmp_path):
    import imageio.v2 as imageio

    seen = []
    info = render_orbit_video(scene, tmp_path / "orbit.mp4", frames=4, fps=12, resolution=16, sample_mult=1,
                              batch_size=2, depth_path=tmp_path / "orbit_depth.mp4",
                              progress=lambda d, t: seen.append(d))
    assert seen == [2, 4] and info.frames == 4 and info.size == (128, 128)
    for path in (info.path, info.depth_path):
        reader = imageio.get_reader(path)
        try:
            assert reader.count_frames() == 4
            meta = reader.get_meta_data()
            assert meta["fps"] == 12 and meta["codec"] == "h264" and meta["size"] == (128, 128)
            assert reader.get_data(0).shape == (128, 128, 3)
        finally:
            reader.close()
    assert _leftovers(tmp_path) == []


def test_interrupted_video_leaves_no_file(scene, tmp_path):
    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_orbit_video(scene, tmp_path / "orbit.mp4", frames=2, fps=10, resolution=16, sample_mult=1,
                           batch_size=1, progress=stop)
    assert list(tmp_path.iterdir()) == []

