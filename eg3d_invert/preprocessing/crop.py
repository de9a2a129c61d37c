"""The official EG3D in-the-wild crop: 5 landmarks -> 512x512 face crop, and its 2x3 transforms.

This re-implements, number for number, what NVlabs/eg3d ``crop_images_in_the_wild.py`` does with
Deep3DFaceRecon's ``align_img``:

1. flip the landmarks' y axis (``y' = H - 1 - y``, in float32 like the official ``np.loadtxt``
   arrays);
2. least-squares *POS* fit (scaled orthographic projection, 8 unknowns) of the 5 reference 3-D
   landmarks :data:`REFERENCE_LANDMARKS_3D` to them: ``t`` is where the 3-D origin projects
   (y-up frame) and ``s_pos`` the mean norm of the two projection rows;
3. ``s = 300 / s_pos``; the photo is resized to ``w = int(W*s)`` by ``h = int(H*s)`` (bicubic);
4. a 1024 square is cut at ``left = int(w/2 - 512 + (t_x - W/2) s)``,
   ``up = int(h/2 - 512 + (H/2 - t_y) s)`` (black outside the photo), then its centre 700
   square ``[162, 862)`` is resized to 512 with Lanczos.

There is no rotation: the crop is an axis-aligned scale + translation of the photo. Only the
700 px window that survives step 4 is ever resampled (Pillow's ``resize(box=...)`` computes the
same filter taps as resizing the whole photo and cropping), which keeps large up-scalings cheap.

Pixel coordinates everywhere in this package follow OpenCV: the centre of the top-left pixel is
``(0, 0)``, x to the right, y down. :attr:`CropGeometry.photo_to_crop` maps photo coordinates to
512-crop coordinates in that convention, so ``cv2.warpAffine(photo, photo_to_crop, (512, 512))``
approximates the crop (without the anti-aliasing) and ``cv2.warpAffine(crop, crop_to_photo,
(W, H))`` pastes it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

#: Deep3DFaceRecon's standard 3-D landmarks (``BFM/similarity_Lm3D_all.mat`` reduced to 5 points,
#: float32) in BFM units (about 10 cm), x toward the subject's left (image right for a frontal
#: face), y up, z out of the face. Order: eye on the image left (the subject's right eye), eye
#: on the image right, nose tip, mouth corner on the image left, mouth corner on the image right.
REFERENCE_LANDMARKS_3D = np.array([
    [-0.31148657, 0.29036078, 0.13377953],
    [0.30979887, 0.28972036, 0.13179526],
    [0.00325350, -0.04617932, 0.55244243],
    [-0.25216928, -0.38133916, 0.22405732],
    [0.24846619, -0.38128236, 0.22235769],
], dtype=np.float32)

#: Constants of ``crop_images_in_the_wild.py``.
RESCALE_FACTOR = 300.0
ALIGN_SIZE = 1024
CENTER_CROP_SIZE = 700
OUTPUT_SIZE = 512
#: Offset of the centre crop inside the 1024 frame: ``int(1024/2 - 700/2)``.
CENTER_CROP_OFFSET = int(ALIGN_SIZE / 2 - CENTER_CROP_SIZE / 2)

Padding = Literal["black", "reflect"]


def _check_points(points, name: str = "points") -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (5, 2):
        raise ValueError(f"{name} must have shape (5, 2), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return pts


def pos_fit(points, image_height: int) -> tuple[np.ndarray, float]:
    """The official POS fit of :data:`REFERENCE_LANDMARKS_3D` to 5 landmarks.

    Args:
        points: ``(5, 2)`` landmarks in photo pixels (y down), in the MTCNN order (eye on the
            image left, eye on the image right, nose, mouth corner image left, image right).
        image_height: ``H`` of the photo (used by the official y flip ``H - 1 - y``).

    Returns:
        ``(t, s_pos)``: ``t`` ``(2,)`` float64, where the reference origin projects in the
        y-**up** frame; ``s_pos`` the projection scale (pixels per BFM unit).
    """
    pts = _check_points(points).astype(np.float32)
    # float32 arithmetic for the flip, like the official arrays read with np.loadtxt(...).astype(float32)
    flipped_y = np.float32(image_height - 1) - pts[:, 1]
    xp = np.stack([pts[:, 0], flipped_y], axis=1).astype(np.float64)
    x3 = REFERENCE_LANDMARKS_3D.astype(np.float64)
    a = np.zeros((10, 8))
    a[0::2, 0:3] = x3
    a[0::2, 3] = 1.0
    a[1::2, 4:7] = x3
    a[1::2, 7] = 1.0
    k = np.linalg.lstsq(a, xp.reshape(-1), rcond=None)[0]
    s_pos = float((np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2.0)
    if not np.isfinite(s_pos) or s_pos <= 1e-6:
        raise ValueError("the 5 landmarks are degenerate (POS scale is zero)")
    return np.array([k[3], k[7]]), s_pos


def _affine_inverse(m: np.ndarray) -> np.ndarray:
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(matrix, points) -> np.ndarray:
    """Apply a 2x3 affine ``matrix`` to points ``(..., 2)``; returns float64 ``(..., 2)``."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {m.shape}")
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {p.shape}")
    return p @ m[:, :2].T + m[:, 2]


@dataclass(frozen=True)
class CropGeometry:
    """Where the official crop sits in a photo.

    Attributes:
        photo_size: ``(W, H)`` of the photo.
        scale: ``s = 300 / s_pos``, the official resize factor.
        resized_size: ``(w, h) = (int(W s), int(H s))``, the size of the official resized photo.
        align_box: ``(left, up)`` of the 1024 frame in the resized photo.
        pos_translation: ``t`` of the POS fit (y-up frame), for reference.
        pos_scale: ``s_pos`` of the POS fit (photo pixels per BFM unit).
    """

    photo_size: tuple[int, int]
    scale: float
    resized_size: tuple[int, int]
    align_box: tuple[int, int]
    pos_translation: tuple[float, float]
    pos_scale: float

    @classmethod
    def from_points(cls, points, photo_size: tuple[int, int]) -> "CropGeometry":
        """Geometry of the official crop for 5 landmarks ``(5, 2)`` in a photo of ``(W, H)``."""
        width, height = (int(v) for v in photo_size)
        if width <= 0 or height <= 0:
            raise ValueError(f"photo_size must be positive (W, H), got {photo_size}")
        t, s_pos = pos_fit(points, height)
        s = RESCALE_FACTOR / s_pos
        w, h = int(width * s), int(height * s)
        if w < 1 or h < 1:
            raise ValueError(f"the face is too large for the photo: it would be resized to {w}x{h}")
        # int() truncates toward zero, like the official astype(np.int32).
        left = int(w / 2 - ALIGN_SIZE / 2 + (t[0] - width / 2) * s)
        up = int(h / 2 - ALIGN_SIZE / 2 + (height / 2 - t[1]) * s)
        return cls((width, height), float(s), (w, h), (left, up), (float(t[0]), float(t[1])), s_pos)

    @property
    def window(self) -> tuple[int, int, int, int]:
        """The 700 px window ``(x0, y0, x1, y1)`` in the resized photo that becomes the crop."""
        x0 = self.align_box[0] + CENTER_CROP_OFFSET
        y0 = self.align_box[1] + CENTER_CROP_OFFSET
        return x0, y0, x0 + CENTER_CROP_SIZE, y0 + CENTER_CROP_SIZE

    @property
    def photo_to_crop(self) -> np.ndarray:
        """``(2, 3)`` float64 affine from photo pixels to 512-crop pixels (OpenCV pixel centres)."""
        kx = self.resized_size[0] / self.photo_size[0]
        ky = self.resized_size[1] / self.photo_size[1]
        x0, y0 = self.window[:2]
        m = OUTPUT_SIZE / CENTER_CROP_SIZE
        # corner-origin coords: u_c = (x_c * k - x0) * m; pixel centres sit at +0.5 on both sides.
        return np.array([[kx * m, 0.0, (0.5 * kx - x0) * m - 0.5],
                         [0.0, ky * m, (0.5 * ky - y0) * m - 0.5]])

    @property
    def crop_to_photo(self) -> np.ndarray:
        """``(2, 3)`` float64 inverse of :attr:`photo_to_crop`."""
        return _affine_inverse(self.photo_to_crop)

    def crop_corners(self) -> np.ndarray:
        """Corners of the crop in photo pixels ``(4, 2)``: top-left, top-right, bottom-right, bottom-left."""
        e = OUTPUT_SIZE - 0.5
        return apply_affine(self.crop_to_photo, [[-0.5, -0.5], [e, -0.5], [e, e], [-0.5, e]])

    def to_dict(self) -> dict:
        return {"photo_size": list(self.photo_size), "scale": self.scale, "resized_size": list(self.resized_size),
                "align_box": list(self.align_box), "pos_translation": list(self.pos_translation),
                "pos_scale": self.pos_scale}


def _reflect_indices(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices mirrored into ``[0, n)`` without repeating the edge pixel (OpenCV REFLECT_101)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


def crop_face(photo: np.ndarray, geometry: CropGeometry, padding: Padding = "black") -> np.ndarray:
    """Cut the official 512x512 crop out of ``photo``.

    Args:
        photo: ``(H, W, 3)`` uint8 RGB, the same size as ``geometry.photo_size``.
        geometry: from :meth:`CropGeometry.from_points`.
        padding: ``"black"`` fills what lies outside the photo with black, as the official code
            does (and then matches it to resampling precision); ``"reflect"`` mirrors the photo
            at its borders instead, which hides the black corners when the face is near an edge.

    Returns:
        ``(512, 512, 3)`` uint8 RGB.
    """
    if not isinstance(photo, np.ndarray) or photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"photo must be an (H, W, 3) uint8 array, got "
                         f"{getattr(photo, 'shape', None)} {getattr(photo, 'dtype', type(photo).__name__)}")
    height, width = photo.shape[:2]
    if (width, height) != tuple(geometry.photo_size):
        raise ValueError(f"photo is {width}x{height} but the geometry was computed for "
                         f"{geometry.photo_size[0]}x{geometry.photo_size[1]}")
    if padding not in ("black", "reflect"):
        raise ValueError(f"padding must be 'black' or 'reflect', got {padding!r}")
    w, h = geometry.resized_size
    fx, fy = width / w, height / h  # photo pixels per resized pixel
    x0, y0, x1, y1 = geometry.window
    pil = Image.fromarray(photo)
    if padding == "black":
        window = Image.new("RGB", (CENTER_CROP_SIZE, CENTER_CROP_SIZE), (0, 0, 0))
        ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if ax1 > ax0 and ay1 > ay0:
            part = pil.resize((ax1 - ax0, ay1 - ay0), Image.Resampling.BICUBIC,
                              box=(ax0 * fx, ay0 * fy, ax1 * fx, ay1 * fy))
            window.paste(part, (ax0 - x0, ay0 - y0))
    else:
        # Source region of the window plus the bicubic support (2 taps, widened when shrinking).
        sx0, sx1, sy0, sy1 = x0 * fx, x1 * fx, y0 * fy, y1 * fy
        mx, my = 2.0 * max(fx, 1.0) + 2.0, 2.0 * max(fy, 1.0) + 2.0
        ix0, ix1 = int(np.floor(sx0 - mx)), int(np.ceil(sx1 + mx))
        iy0, iy1 = int(np.floor(sy0 - my)), int(np.ceil(sy1 + my))
        cols = _reflect_indices(np.arange(ix0, ix1), width)
        rows = _reflect_indices(np.arange(iy0, iy1), height)
        sub = Image.fromarray(np.ascontiguousarray(photo[rows][:, cols]))
        window = sub.resize((CENTER_CROP_SIZE, CENTER_CROP_SIZE), Image.Resampling.BICUBIC,
                            box=(sx0 - ix0, sy0 - iy0, sx1 - ix0, sy1 - iy0))
    out = window.resize((OUTPUT_SIZE, OUTPUT_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(out, dtype=np.uint8).copy()


def official_crop_reference(photo: np.ndarray, points) -> np.ndarray:
    """The official steps literally (resize the whole photo, crop 1024, crop 700, Lanczos 512).

    Slow for large up-scalings; kept as an executable statement of the reference behaviour that
    :func:`crop_face` is tested against.
    """
    height, width = photo.shape[:2]
    g = CropGeometry.from_points(points, (width, height))
    big = Image.fromarray(photo).resize(g.resized_size, Image.Resampling.BICUBIC)
    left, up = g.align_box
    aligned = big.crop((left, up, left + ALIGN_SIZE, up + ALIGN_SIZE))
    c = CENTER_CROP_OFFSET
    centre = aligned.crop((c, c, c + CENTER_CROP_SIZE, c + CENTER_CROP_SIZE))
    return np.asarray(centre.resize((OUTPUT_SIZE, OUTPUT_SIZE), Image.Resampling.LANCZOS)).copy()
