"""The official in-the-wild crop: number-for-number against the official crops in evaldata."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from PIL import Image

from eg3d_invert.preprocessing.crop import (REFERENCE_LANDMARKS_3D, CropGeometry, apply_affine, crop_face,
                                            official_crop_reference, pos_fit)
from eg3d_invert.preprocessing.reading import read_image

from .conftest import EVALDATA, require


@functools.lru_cache(maxsize=None)
def _photos() -> list[dict]:
    index = json.loads(require(EVALDATA / "index.json").read_text())
    return [it for it in index["items"] if it["kind"] == "original"]


def _load(item) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    photo = read_image(EVALDATA / item["image"])
    points = np.loadtxt(EVALDATA / item["mtcnn_5pt_official"])
    crop_path = (EVALDATA / item["image"].replace("photos", "crop")).with_suffix(".png")
    official = np.asarray(Image.open(crop_path).convert("RGB"))
    return photo, points, official


def test_crop_from_official_points_equals_official_crop():
    """Mean absolute difference <= 1/255 per channel on every 6th evaldata photo (all yaws)."""
    diffs = []
    for item in _photos()[::6]:
        photo, points, official = _load(item)
        crop = crop_face(photo, CropGeometry.from_points(points, (photo.shape[1], photo.shape[0])))
        assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
        diffs.append(np.abs(crop.astype(np.int16) - official).mean())
    assert max(diffs) <= 1.0, f"worst mean abs diff {max(diffs):.3f}/255"
    # A one-pixel slip of the window would cost several levels; the residual is JPEG decoding.
    assert np.median(diffs) < 0.5


def test_window_resize_equals_whole_photo_resize():
    """Resizing only the 700 px window gives the pixels of the literal official steps."""
    for item in _photos()[::50]:
        photo, points, _ = _load(item)
        fast = crop_face(photo, CropGeometry.from_points(points, (photo.shape[1], photo.shape[0])))
        literal = official_crop_reference(photo, points)
        d = np.abs(fast.astype(int) - literal)
        assert d.max() <= 2 and d.mean() < 0.01


def test_pos_fit_recovers_a_known_projection():
    s, t = 123.0, np.array([300.0, 200.0])
    a = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # frontal scaled orthographic projection
    up = REFERENCE_LANDMARKS_3D.astype(np.float64) @ a.T * s + t  # y-up frame
    height = 480
    points = np.column_stack([up[:, 0], height - 1 - up[:, 1]])
    t_fit, s_fit = pos_fit(points, height)
    np.testing.assert_allclose(t_fit, t, atol=1e-3)
    assert s_fit == pytest.approx(s, rel=1e-5)


def test_geometry_follows_the_official_formulas():
    points = np.loadtxt(EVALDATA / _photos()[0]["mtcnn_5pt_official"]) if _photos() else None
    g = CropGeometry.from_points(points, (1280, 720))
    t, s_pos = pos_fit(points, 720)
    s = 300.0 / s_pos
    assert g.scale == pytest.approx(s)
    assert g.resized_size == (int(1280 * s), int(720 * s))
    w, h = g.resized_size
    assert g.align_box == (int(w / 2 - 512 + (t[0] - 640) * s), int(h / 2 - 512 + (360 - t[1]) * s))
    assert g.window == (g.align_box[0] + 162, g.align_box[1] + 162, g.align_box[0] + 862, g.align_box[1] + 862)


def test_transforms_are_inverse_and_describe_the_pixels():
    """Pixel-centre convention: warping the photo with photo_to_crop reproduces the crop."""
    import cv2

    photo, points, _ = _load(_photos()[120])
    g = CropGeometry.from_points(points, (photo.shape[1], photo.shape[0]))
    m, inv = g.photo_to_crop, g.crop_to_photo
    pts = np.random.default_rng(0).uniform(0, 700, (20, 2))
    np.testing.assert_allclose(apply_affine(inv, apply_affine(m, pts)), pts, atol=1e-9)
    crop = crop_face(photo, g).astype(np.float32)
    warped = cv2.warpAffine(photo, m, (512, 512), flags=cv2.INTER_CUBIC).astype(np.float32)
    good = np.abs(warped - crop).mean()
    shifted = m.copy()
    shifted[:, 2] += 0.5  # a half-pixel convention slip must be visible
    bad = np.abs(cv2.warpAffine(photo, shifted, (512, 512), flags=cv2.INTER_CUBIC) - crop).mean()
    assert good < 2.0 and bad > good * 1.2, (good, bad)
    # the crop corners land on the photo where the window is
    corners = g.crop_corners()
    k = np.array([photo.shape[1] / g.resized_size[0], photo.shape[0] / g.resized_size[1]])
    np.testing.assert_allclose(corners[0], np.array(g.window[:2]) * k - 0.5, atol=1e-6)


def test_padding_black_like_official_or_reflected():
    # A face pushed to the photo's top-left corner: the crop leaves the photo.
    photo, points, _ = _load(_photos()[140])
    x0, y0 = int(points[:, 0].min()) - 60, int(points[:, 1].min()) - 80
    cut = np.ascontiguousarray(photo[y0:, x0:])
    pts = points - [x0, y0]
    g = CropGeometry.from_points(pts, (cut.shape[1], cut.shape[0]))
    black = crop_face(cut, g, "black")
    reflect = crop_face(cut, g, "reflect")
    assert np.all(black[:20, :20] == 0) and reflect[:20, :20].mean() > 20
    literal = np.abs(black.astype(int) - official_crop_reference(cut, pts))
    assert literal.max() <= 2 and literal.mean() < 0.01
    inside = np.abs(black[300:, 300:].astype(int) - reflect[300:, 300:])
    assert inside.max() <= 1


def test_flipped_points_give_the_flipped_crop_within_2_px():
    """The crop math itself is mirror-symmetric up to the official int() truncations."""
    photo, points, _ = _load(_photos()[130])
    width = photo.shape[1]
    swap = [1, 0, 2, 4, 3]
    mirrored = points[swap].copy()
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    g = CropGeometry.from_points(points, (width, photo.shape[0]))
    gm = CropGeometry.from_points(mirrored, (width, photo.shape[0]))
    a = apply_affine(g.photo_to_crop, points)
    b = apply_affine(gm.photo_to_crop, mirrored)[swap]
    b[:, 0] = 511 - b[:, 0]
    assert np.abs(a - b).max() <= 2.0
    flipped_crop = crop_face(np.ascontiguousarray(photo[:, ::-1]), gm)[:, ::-1]
    assert np.abs(flipped_crop.astype(int) - crop_face(photo, g)).mean() < 12  # a 1-2 px shift only


def test_input_checks():
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        CropGeometry.from_points(np.zeros((4, 2)), (100, 100))
    with pytest.raises(ValueError, match="NaN"):
        CropGeometry.from_points(np.full((5, 2), np.nan), (100, 100))
    with pytest.raises(ValueError, match="degenerate"):
        CropGeometry.from_points(np.zeros((5, 2)), (100, 100))
    g = CropGeometry.from_points(np.loadtxt(EVALDATA / _photos()[0]["mtcnn_5pt_official"]), (1280, 720))
    with pytest.raises(ValueError, match="geometry was computed for 1280x720"):
        crop_face(np.zeros((10, 10, 3), np.uint8), g)
    with pytest.raises(ValueError, match="padding"):
        crop_face(np.zeros((720, 1280, 3), np.uint8), g, "edge")


def test_realigning_official_crops_gives_them_back():
    """Our whole alignment run on the 20 official 512 crops of ``calib/`` (20 people): the crop it
    places is the given one within 3% of scale and 8 px (centre) for 18 of them, and within 7% and
    9 px for all. The two others are what the official pipeline itself does to those crops: our
    detector gives the official detector's points to the pixel (``test_detector_reproduces_the_
    official_mtcnn_points``) and MTCNN run on a crop does not see the face exactly as on the photo."""
    import json

    from eg3d_invert.preprocessing import Aligner

    index = require(EVALDATA / "calib" / "index.json")
    items = [it for it in json.loads(index.read_text())["items"] if it["kind"] == "aligned512"]
    aligner = Aligner()
    scale_err, shift = [], []
    for item in items:
        face = aligner.align(index.parent / item["image"])
        g = face.photo_to_crop
        scale_err.append(abs(g[0, 0] - 1.0))
        shift.append(float(np.linalg.norm(g @ [255.5, 255.5, 1.0] - 255.5)))
    scale_err, shift = np.array(scale_err), np.array(shift)
    assert len(items) == 20
    assert ((scale_err <= 0.03) & (shift <= 8.0)).sum() >= 18, (scale_err, shift)
    assert scale_err.max() <= 0.07 and shift.max() <= 9.0
    assert np.median(scale_err) <= 0.015 and np.median(shift) <= 4.0
