"""Camera conventions, pinned against the official outputs in ../shared/reference."""

import numpy as np
import pytest
import torch

from eg3d_invert import camera as C

from .conftest import reference_npz


def test_official_cameras_are_reproduced_exactly():
    ref = reference_npz("tiny_A")
    views = [(0.0, 0.0), (0.4, 0.0), (-0.4, 0.0), (0.0, 0.2)]
    c2w = C.lookat_pose([np.pi / 2 + y for y, _ in views], [np.pi / 2 + p for _, p in views])
    labels = C.make_label(c2w, C.fov_to_intrinsics(C.DEFAULT_FOV_DEG))
    np.testing.assert_array_equal(labels.numpy(), ref["c"])


def test_fov_formula_keeps_official_constants():
    assert C.fov_to_focal(18.837) == pytest.approx(4.263391, abs=1e-6)
    assert C.fov_to_focal(18) == pytest.approx(4.465175, abs=1e-6)  # what gen_samples.py really uses
    assert C.focal_to_fov(C.fov_to_focal(13.0)) == pytest.approx(13.0)


def test_label_round_trip_and_row_major_layout():
    cam = C.Camera.from_angles([10.0, -25.0], [5.0, -3.0])
    c2w, k = C.split_label(cam.label)
    torch.testing.assert_close(c2w, cam.cam2world)
    torch.testing.assert_close(k, cam.intrinsics)
    assert cam.label[0, 3] == cam.cam2world[0, 0, 3]  # x of the camera centre is c[3]
    assert cam.label[0, 16] == pytest.approx(C.FFHQ_FOCAL)


def test_geometric_angles_round_trip():
    yaw, pitch = C.label_angles(C.Camera.from_angles([30.0, -45.0, 0.0], [0.0, 12.0, -20.0]).label)
    np.testing.assert_allclose(yaw, [30.0, -45.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(pitch, [0.0, 12.0, -20.0], atol=1e-4)


def test_convention_positive_official_pitch_is_below_and_positive_yaw_is_plus_x():
    pose = C.lookat_pose(np.pi / 2 + 0.3, np.pi / 2 + 0.2)[0]
    assert pose[0, 3] > 0  # camera toward +x
    assert pose[1, 3] < 0  # official positive pitch: camera below the face
    assert pose[1, 1] < 0  # camera y axis points world-down (OpenCV)
    assert torch.linalg.det(pose[:3, :3]) == pytest.approx(1.0, abs=1e-5)


def test_flip_yaw_negates_yaw_and_is_an_involution():
    label = C.Camera.from_angles(20.0, 7.0).label[0].numpy()
    flipped = C.flip_yaw(label)
    yaw, pitch = C.label_angles(flipped)
    assert yaw == pytest.approx(-20.0, abs=1e-4) and pitch == pytest.approx(7.0, abs=1e-4)
    np.testing.assert_allclose(C.flip_yaw(flipped), label)
    assert isinstance(flipped, np.ndarray)


def test_orbit_is_the_gen_videos_path():
    n = 120
    poses = C.orbit_poses(n)
    assert poses.shape == (n, 4, 4)
    # Every frame is gen_videos.py's: horizontal pi/2 + 0.35 sin(2 pi t), vertical pi/2 - 0.05 + 0.25 cos(2 pi t),
    # t = i / n (with the script's 3.14), so a reversed, halved or shifted path fails here.
    t = np.arange(n) / n
    expected = C.lookat_pose(3.14 / 2 + 0.35 * np.sin(2 * 3.14 * t), 3.14 / 2 - 0.05 + 0.25 * np.cos(2 * 3.14 * t))
    torch.testing.assert_close(poses, expected)


def test_orbit_direction_and_one_whole_loop():
    n = 120
    yaw, pitch = C.label_angles(C.orbit_poses(n))
    # It starts below the eye line at the front, swings toward the subject's left (+x) first,
    # passes above the eyes half-way, then comes round the right side.
    # (The script's 3.14 instead of pi moves the extremes by up to a frame.)
    assert abs(yaw[0]) < 0.5 and pitch[0] < -5
    assert yaw[n // 4] > 15 and abs(int(yaw.argmax()) - n // 4) <= 1
    assert abs(yaw[n // 2]) < 1 and pitch[n // 2] > 5 and abs(int(pitch.argmax()) - n // 2) <= 1
    assert yaw[3 * n // 4] < -15 and abs(int(yaw.argmin()) - 3 * n // 4) <= 1
    # One loop: left side for the first half, right side for the second, and the last frame leads
    # back into the first.
    assert (yaw[1:n // 2] > 0).all() and (yaw[n // 2 + 1:] < 0).all()
    step = 1.2 * np.abs(np.diff(yaw)).max()  # 3.14 for pi leaves the loop a little open
    assert abs(yaw[-1] - yaw[0]) <= step and abs(pitch[-1] - pitch[0]) <= step


def test_camera_sphere_comes_from_the_checkpoint_or_the_official_defaults():
    from types import SimpleNamespace

    from eg3d_invert.errors import ConfigError

    ffhq = SimpleNamespace(rendering_kwargs={"avg_camera_pivot": [0, 0, 0.2], "avg_camera_radius": 2.7})
    assert C.camera_sphere(ffhq) == ((0.0, 0.0, 0.2), 2.7)
    bare = SimpleNamespace(rendering_kwargs={})  # gen_samples.py / gen_videos.py fall back to these
    assert C.camera_sphere(bare) == (C.OFFICIAL_DEFAULT_PIVOT, C.OFFICIAL_DEFAULT_RADIUS)
    for bad in ({"avg_camera_pivot": "front"}, {"avg_camera_pivot": [0, 0]}, {"avg_camera_radius": -1}):
        with pytest.raises(ConfigError, match="camera sphere"):
            C.camera_sphere(SimpleNamespace(rendering_kwargs=bad))
