"""Head pose -> EG3D label: the official conversion, conventions, and the fit's equivariances."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from eg3d_invert.camera import FFHQ_FOCAL, flip_yaw, label_angles
from eg3d_invert.preprocessing.pose import (FLIP_YZ, default_pose_model, fit_mesh_rotation, label_from_rotation,
                                            label_roll, rot_x, rotation_from_label, similarity_fit)

from .conftest import EVALDATA, require


def rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def head(yaw=0.0, nod=0.0, tilt=0.0) -> np.ndarray:
    """Q (face -> OpenCV camera) of a head turned by ``yaw`` about its up axis (toward the image
    left when positive), nodded and tilted, all in degrees, seen from the front."""
    return FLIP_YZ @ rot_z(tilt) @ rot_x(math.radians(nod)) @ rot_y(-yaw)


def test_frontal_label_convention():
    label = label_from_rotation(head())
    assert label.shape == (25,)
    cam2world = label[:16].reshape(4, 4)
    np.testing.assert_allclose(cam2world[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    np.testing.assert_allclose(cam2world[3], [0, 0, 0, 1])
    # The camera sits on +z at radius 2.7, nudged up by the official offset (0, 0.006, 0.161).
    expected = np.array([0.0, 0.006, 2.7 + 0.161])
    np.testing.assert_allclose(cam2world[:3, 3], 2.7 * expected / np.linalg.norm(expected), atol=1e-12)
    np.testing.assert_allclose(label[16:].reshape(3, 3), [[FFHQ_FOCAL, 0, 0.5], [0, FFHQ_FOCAL, 0.5], [0, 0, 1]])


def test_offset_lowers_large_yaw_by_about_3_degrees():
    """Head turned 60 degrees toward the image left: camera toward +x, geometric yaw 57.1 not 60."""
    yaw, pitch = label_angles(label_from_rotation(head(yaw=60.0))[None])
    expected = math.degrees(math.atan2(2.7 * math.sin(math.radians(60)), 2.7 * math.cos(math.radians(60)) + 0.161))
    assert yaw[0] == pytest.approx(expected, abs=1e-6)
    assert 56.5 < yaw[0] < 57.5
    # the rotation is kept: the optical axis does not pass exactly through the camera centre's ray
    label = label_from_rotation(head(yaw=60.0))
    c2w = label[:16].reshape(4, 4)
    assert np.dot(-c2w[:3, 2], c2w[:3, 3] / 2.7) < 0.9995


def test_signs_of_pitch_and_roll():
    # Chin down (the face nods toward the camera's floor) = camera above the head = positive pitch.
    _, pitch = label_angles(label_from_rotation(head(nod=10.0))[None])
    a = math.radians(10.0)
    expected = math.degrees(math.atan2(2.7 * math.sin(a) + 0.006, 2.7 * math.cos(a) + 0.161))
    assert pitch[0] == pytest.approx(expected, abs=1e-6) and 9.5 < expected < 9.6
    # top of the head tilted toward the image right = positive roll (in-image clockwise)
    q = head(tilt=-8.0)
    top = q @ np.array([0.0, 1.0, 0.0])  # face up axis in OpenCV camera coords (y down)
    assert top[0] > 0
    assert label_roll(label_from_rotation(q)) == pytest.approx(8.0, abs=1e-6)


def test_mirrored_head_gives_flip_yaw_label():
    s = np.diag([-1.0, 1.0, 1.0])
    for q in (head(35, 7, -4), head(-50, -12, 9)):
        label = label_from_rotation(q)
        np.testing.assert_allclose(label_from_rotation(s @ q @ s), flip_yaw(label), atol=1e-12)
        assert label_roll(flip_yaw(label)) == pytest.approx(-label_roll(label))


def test_conversion_reproduces_official_labels_from_their_rotation():
    """Every official label, rebuilt from its own rotation by our conversion: same rotation, and
    yaw/pitch within 0.7 degrees (the rest is Deep3DFaceRecon's small translation we drop)."""
    items = [it for it in json.loads(require(EVALDATA / "index.json").read_text())["items"] if it["kind"] == "original"]
    official = np.array([it["label"] for it in items])
    ours = np.array([label_from_rotation(rotation_from_label(lab)) for lab in official])
    np.testing.assert_allclose(ours[:, :16].reshape(-1, 4, 4)[:, :3, :3],
                               official[:, :16].reshape(-1, 4, 4)[:, :3, :3], atol=1e-12)
    np.testing.assert_allclose(ours[:, 16:], official[:, 16:], atol=1e-6)
    y0, p0 = label_angles(official)
    y1, p1 = label_angles(ours)
    assert np.abs(y1 - y0).max() < 0.7 and np.abs(p1 - p0).max() < 0.25
    # without the fixed offset the error at large yaw would be several degrees
    no_offset = -ours[:, :16].reshape(-1, 4, 4)[:, :3, 2]
    y2 = np.degrees(np.arctan2(no_offset[:, 0], no_offset[:, 2]))
    assert np.abs(y2 - y0).max() > 2.5


def test_similarity_fit_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    q = head(20, -10, 5)
    dst = 3.5 * src @ q.T + [1.0, -2.0, 0.5]
    c, r, t = similarity_fit(src, dst)
    assert c == pytest.approx(3.5)
    np.testing.assert_allclose(r, q, atol=1e-10)
    np.testing.assert_allclose(t, [1.0, -2.0, 0.5], atol=1e-10)
    with pytest.raises(ValueError):
        similarity_fit(src, dst[:10])


def test_pose_model_mean_face_is_symmetric_and_in_the_d3d_frame():
    t = default_pose_model()
    m = t.mesh_mirror
    np.testing.assert_array_equal(m[m], np.arange(478))
    np.testing.assert_allclose(t.mesh[m[:468]] * [-1, 1, 1], t.mesh, atol=1e-6)
    # eye corners above the nose tip above the mouth corners; nose tip in front
    assert t.mesh[33, 1] > t.mesh[1, 1] > t.mesh[61, 1]
    assert t.mesh[1, 2] > t.mesh[33, 2] and t.mesh[33, 0] < 0 < t.mesh[263, 0]
    assert 0.5 < np.linalg.norm(t.mesh[33] - t.mesh[263]) < 1.2  # BFM units: ~10 cm


def test_mesh_fit_is_rotation_equivariant_and_mirror_symmetric():
    t = default_pose_model()
    rng = np.random.default_rng(2)
    noise = rng.normal(scale=0.01, size=(478, 3))
    base_mesh = np.vstack([t.mesh, t.mesh[468 - 10:]]) + noise  # 478 rows like mediapipe's
    def camera_mesh(q):
        return 140.0 * base_mesh @ q.T + [320.0, 240.0, 0.0]
    base = fit_mesh_rotation(camera_mesh(head()), t)
    for q in (head(30, 5, 0), head(-45, -10, 6)):
        got = fit_mesh_rotation(camera_mesh(q), t)
        np.testing.assert_allclose(got, q @ FLIP_YZ @ base, atol=1e-3)
    # mirrored mesh (x negated, points re-paired) -> mirrored rotation
    q = head(25, 8, -5)
    mesh = camera_mesh(q)
    mirrored = mesh[t.mesh_mirror] * [-1, 1, 1]
    s = np.diag([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(fit_mesh_rotation(mirrored, t), s @ fit_mesh_rotation(mesh, t) @ s, atol=2e-3)


def test_mesh_fit_yaw_matches_the_turn():
    t = default_pose_model()
    mesh = 150.0 * np.vstack([t.mesh, t.mesh[:10]]) @ head(40).T + [400.0, 300.0, 0.0]
    yaw, pitch = label_angles(label_from_rotation(fit_mesh_rotation(mesh, t))[None])
    expected = math.degrees(math.atan2(2.7 * math.sin(math.radians(40)), 2.7 * math.cos(math.radians(40)) + 0.161))
    assert yaw[0] == pytest.approx(expected, abs=0.5)
    with pytest.raises(ValueError):
        fit_mesh_rotation(np.zeros((100, 3)), t)


def test_pose_model_generalises_person_by_person():
    """Leave-one-person-out over the 21 labelled people (every 8th head-turn photo to keep it
    fast), with the package's fitting code and defaults: each person's errors come from a model
    fitted without them. Pins the figures quoted in the README, so a change that fits the
    calibration people better but generalises worse fails here."""
    from eg3d_invert.preprocessing import pose_fit
    from eg3d_invert.preprocessing.detection import FaceDetector
    from eg3d_invert.preprocessing.landmarks import MeshLandmarker

    require(EVALDATA / "calib" / "index.json")
    mirror = default_pose_model().mesh_mirror
    samples = pose_fit.calibration_samples(EVALDATA, FaceDetector(), MeshLandmarker(mirror=mirror), headturn_every=8)
    assert len({s.person for s in samples}) == 21
    errors = pose_fit.leave_one_person_out(samples, mirror)
    summary = pose_fit.summarize(errors)
    per_person = summary["per_person"]
    assert per_person["yaw"]["median"] <= 1.5 and per_person["yaw"]["max"] <= 5.0, summary
    assert per_person["pitch"]["median"] <= 1.5 and per_person["pitch"]["max"] <= 5.0, summary
    others = [e for e in errors if e.person != "headturn"]
    assert max(abs(e.pitch_error) for e in others) <= 5.0 and max(abs(e.yaw_error) for e in others) <= 5.0
    # the head-turn person reaches 61 deg of yaw; at the extreme the pitch error grows (README)
    assert summary["per_photo"]["yaw"]["max"] <= 5.0 and summary["per_photo"]["pitch"]["max"] <= 6.0
    # the old two-face template placed the camera 3 deg too high on other people: no such bias now
    bias = np.mean([e.pitch_error for e in others])
    assert abs(bias) < 1.0


def test_pose_model_names_its_data_and_cross_validated_figures():
    model = default_pose_model()
    assert model.meta["people"] == 21 and model.meta["photos"] == 174
    assert set(model.meta["data"]) == {"calib", "headturn", "package_photos"}
    cv = model.meta["leave_one_person_out"]["per_person"]
    assert cv["pitch"]["median"] <= 1.5 and cv["pitch"]["max"] <= 5.0


def test_pose_model_round_trips_and_is_validated(tmp_path):
    from eg3d_invert.preprocessing.pose import PoseModel

    model = default_pose_model()
    model.save(tmp_path / "m.npz")
    again = PoseModel.load(tmp_path / "m.npz")
    np.testing.assert_allclose(again.mesh, model.mesh, atol=1e-6)
    assert again.meta == model.meta
    with pytest.raises(ValueError, match="pitch_coef"):
        PoseModel(model.mesh, model.mesh_mirror, model.shape_mean, model.shape_modes, model.feature_mean,
                  model.feature_scale, model.pitch_coef[:-1])


def test_pose_warnings():
    from eg3d_invert.preprocessing.pose import pose_warnings

    mesh = np.stack(np.meshgrid(np.linspace(100, 300, 20), np.linspace(100, 350, 24)), -1).reshape(-1, 2)[:468]
    assert pose_warnings(10.0, 5.0, 2.0, 0.999, mesh, (640, 480)) == ()
    kinds = lambda w: [x.split(":")[0] for x in w]  # noqa: E731
    assert kinds(pose_warnings(-52.0, 5.0, 2.0, 0.999, mesh, (640, 480))) == ["yaw"]
    assert kinds(pose_warnings(0.0, 31.0, -18.0, 0.95, mesh, (640, 480))) == ["pitch", "roll", "score"]
    # a face running off the bottom of the photo
    assert kinds(pose_warnings(0.0, 0.0, 0.0, 0.999, mesh, (640, 300))) == ["border"]
