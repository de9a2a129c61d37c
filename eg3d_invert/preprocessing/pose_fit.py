"""Fitting the :class:`~eg3d_invert.preprocessing.pose.PoseModel` to faces with official labels,
and measuring it person by person on people it was not fitted to.

The packaged model is made by ``scripts/fit_pose_model.py`` with these functions; they are
public so that the same fit can be repeated on other labelled data, and so that tests and
``benchmarks/pose.py`` can check that a change generalises.

Fit, from :class:`LabelledMesh` samples (a mediapipe mesh and the official label of its photo):

1. **Mean face in the official frame.** Each mesh is turned into EG3D's world frame with the
   rotation of its own official label (centred, unit RMS size), averaged over each person's
   photos, then over people (every person counts once, however many photos they have),
   made exactly left-right symmetric and scaled and shifted (not rotated) onto D3D's 5 standard
   landmarks so that it is in BFM units. The rotation between the model's frame and EG3D's is
   thereby fitted rather than assumed.
2. **Pitch correction.** The rigid fit of that mean face to each training mesh leaves a pitch
   error (official minus fitted). Its features (:meth:`PoseModel.features`: the first ``modes``
   principal components of the symmetric shape residual, and the nod toward D3D's landmarks)
   are standardised and a ridge regression (``ridge`` on the standardised coefficients, the
   intercept free) predicts the error. Photos are weighted so that every person counts once.

:func:`leave_one_person_out` refits without each person in turn and returns that person's
errors: the figures to quote, as opposed to errors on the data the model was fitted to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..camera import label_angles
from .crop import REFERENCE_LANDMARKS_3D
from .landmarks import MESH_FIVE, five_points
from .pose import (FIT_POINTS, PoseModel, fit_mesh_rotation, label_from_rotation, rigid_fit, rotation_from_label,
                   similarity_fit)

#: Default complexity of the pitch correction (chosen by leave-one-person-out on the calibration
#: data among 2-6 modes and ridge 0.1-5; all gave a calibration-set pitch max of 3.4-4.1 deg).
DEFAULT_MODES = 3
DEFAULT_RIDGE = 1.0
#: Pairs known from mediapipe's mesh topology (eye corners, mouth corners, cheek extremes) and
#: midline points; they only seed :func:`mirror_pairing`, the full pairing is computed.
SEED_PAIRS = ((33, 263), (133, 362), (61, 291), (234, 454), (1, 1), (10, 10), (152, 152))
_MIRROR_X = np.array([-1.0, 1.0, 1.0])


@dataclass(frozen=True, eq=False)
class LabelledMesh:
    """One photo for fitting: ``person`` (who it shows), ``source`` (where it came from),
    ``mesh`` ``(478, 3)`` mediapipe landmarks in photo pixels (OpenCV axes) and the official
    ``label`` ``(25,)`` of that photo."""

    person: str
    source: str
    mesh: np.ndarray
    label: np.ndarray

    @property
    def official_angles(self) -> tuple[float, float]:
        yaw, pitch = label_angles(np.asarray(self.label, dtype=np.float64)[None])
        return float(yaw[0]), float(pitch[0])


@dataclass(frozen=True)
class PoseError:
    """Held-out result for one photo (degrees): official and estimated yaw / pitch."""

    person: str
    source: str
    yaw: float
    pitch: float
    est_yaw: float
    est_pitch: float

    @property
    def yaw_error(self) -> float:
        return self.est_yaw - self.yaw

    @property
    def pitch_error(self) -> float:
        return self.est_pitch - self.pitch


def normalized(points: np.ndarray) -> np.ndarray:
    """Points ``(N, 3)`` centred and scaled to unit RMS distance from their centre."""
    x = points - points.mean(axis=0)
    return x / np.sqrt((x ** 2).sum(axis=1).mean())


def official_frame_shape(sample: LabelledMesh) -> np.ndarray:
    """The sample's mesh ``(468, 3)`` in EG3D's world frame by its official rotation, normalized."""
    q = rotation_from_label(sample.label)  # face -> OpenCV camera
    return normalized(np.asarray(sample.mesh, dtype=np.float64)[:FIT_POINTS]) @ q


def mirror_pairing(points: np.ndarray, seeds=SEED_PAIRS, iterations: int = 10) -> np.ndarray:
    """``perm[i]`` = the point mirroring point ``i``, for one roughly frontal shape ``(N, 3)`` in
    a frame with x across the face: mirror the shape, align it to itself (seeded by ``seeds``)
    and match points by optimal assignment, repeating until the matching settles."""
    x = normalized(points)
    y = x * _MIRROR_X
    a = [p for p, q in seeds] + [q for p, q in seeds]
    b = [q for p, q in seeds] + [p for p, q in seeds]
    c, r, t = similarity_fit(y[b], x[a])
    perm = None
    for _ in range(iterations):
        if perm is not None:
            c, r, t = similarity_fit(y[perm], x)
        z = c * y @ r.T + t
        _, new = linear_sum_assignment(((x[:, None, :] - z[None, :, :]) ** 2).sum(-1))
        if perm is not None and np.array_equal(new, perm):
            break
        perm = new
    if not np.array_equal(perm[perm], np.arange(len(perm))):
        raise RuntimeError("the mirror pairing is not an involution")
    for p, q in seeds:
        if perm[p] != q:
            raise RuntimeError(f"mirror pairing contradicts the seed pair ({p}, {q})")
    return perm


def mesh_mirror_pairing(mesh: np.ndarray) -> np.ndarray:
    """Mirror partners ``(478,)`` of mediapipe's points from one frontal mesh ``(478, 3)`` in
    OpenCV axes: :func:`mirror_pairing` for the 468 mesh points; for the 10 iris points (two rings
    of 5, centre first) the two irises are swapped and, inside a ring, each point is paired with
    the point of the other ring nearest to its mirror image."""
    face = np.asarray(mesh, dtype=np.float64) @ np.diag([1.0, -1.0, -1.0])  # y up, z out of the face
    perm = mirror_pairing(face[:FIT_POINTS])
    ring_a, ring_b = np.arange(468, 473), np.arange(473, 478)
    rel_a = face[ring_a] - face[ring_a[0]]
    rel_b = face[ring_b] * _MIRROR_X - face[ring_b[0]] * _MIRROR_X
    _, match = linear_sum_assignment(((rel_a[:, None, :2] - rel_b[None, :, :2]) ** 2).sum(-1))
    iris = np.concatenate([ring_b[match], ring_a[np.argsort(match)]])
    full = np.concatenate([perm, iris])
    if not np.array_equal(full[full], np.arange(478)) or iris[0] != 473:
        raise RuntimeError("iris mirror pairing failed")
    return full


def labelled_meshes(items: Iterable[dict], person_of: Callable[[dict], str], detector, landmarker,
                    read=None) -> list[LabelledMesh]:
    """Run detection (largest face) and the face mesh on each index item's photo.

    Args:
        items: from :func:`read_labelled_index`.
        person_of: who an item shows.
        detector, landmarker: a :class:`~.detection.FaceDetector` and :class:`~.landmarks.MeshLandmarker`.
        read: photo reader (default :func:`~.reading.read_image`).
    """
    from .reading import read_image

    read = read or read_image
    out = []
    for it in items:
        photo = read(it["image"])
        faces = detector(photo)
        if not faces:
            raise RuntimeError(f"{it['image']}: no face found")
        mesh = landmarker(photo, faces[0].box)
        out.append(LabelledMesh(person_of(it), it["image"], mesh, np.asarray(it["label"], dtype=np.float64)))
    return out


def calibration_samples(evaldata: str | Path, detector, landmarker, *, headturn_every: int = 1) -> list[LabelledMesh]:
    """Labelled meshes of the project's calibration data (``../shared/evaldata``): the people of
    ``calib/index.json`` (no person field there: a raw photo carries the label of its crop, so
    photos with equal labels are one person) and the ``original`` photos of the head turn in
    ``index.json`` (one person, every ``headturn_every``-th photo)."""
    evaldata = Path(evaldata)
    calib = read_labelled_index(evaldata / "calib" / "index.json")
    owner: dict[str, str] = {}
    for it in calib:
        owner.setdefault(json.dumps(it["label"]), Path(it["image"]).relative_to(evaldata / "calib").as_posix())
    samples = labelled_meshes(calib, lambda it: owner[json.dumps(it["label"])], detector, landmarker)
    turn = read_labelled_index(evaldata / "index.json", kinds=["original"], every=headturn_every)
    return samples + labelled_meshes(turn, lambda it: "headturn", detector, landmarker)


def _person_weights(samples: Sequence[LabelledMesh]) -> np.ndarray:
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.person] = counts.get(s.person, 0) + 1
    return np.array([1.0 / counts[s.person] for s in samples])


def mean_face(samples: Sequence[LabelledMesh], mirror: np.ndarray) -> np.ndarray:
    """Step 1 of the module docstring: the symmetric mean face ``(468, 3)`` in BFM units."""
    weights = _person_weights(samples)
    mean = np.einsum("n,nij->ij", weights, np.stack([official_frame_shape(s) for s in samples])) / weights.sum()
    mean = (mean + mean[mirror[:FIT_POINTS]] * _MIRROR_X) / 2.0
    # scale and vertical/depth shift (no rotation, no sideways shift: the frame is the official one)
    five = np.column_stack([five_points(mean, MESH_FIVE), [mean[list(i), 2].mean() for i in MESH_FIVE]])
    ref = np.asarray(REFERENCE_LANDMARKS_3D, dtype=np.float64)
    f0, r0 = five - five.mean(axis=0), ref - ref.mean(axis=0)
    scale = float((f0 * r0).sum() / (f0 ** 2).sum())
    shift = ref.mean(axis=0) - scale * five.mean(axis=0)
    shift[0] = 0.0
    return scale * mean + shift


def fit_pose_model(samples: Sequence[LabelledMesh], mirror: np.ndarray, *, modes: int = DEFAULT_MODES,
                   ridge: float = DEFAULT_RIDGE, dlib_box_map=None, meta: dict | None = None) -> PoseModel:
    """Fit a :class:`PoseModel` (module docstring) to ``samples``.

    Args:
        samples: photos with official labels; at least ``modes + 2`` people.
        mirror: ``(478,)`` mirror pairing of the mediapipe points (:func:`mirror_pairing`).
        modes: principal modes of the shape residual used by the pitch correction (0: the nod only).
        ridge: L2 penalty on the standardised correction coefficients.
        dlib_box_map, meta: stored as they are.
    """
    people = {s.person for s in samples}
    if len(people) < modes + 2:
        raise ValueError(f"fitting {modes} modes needs at least {modes + 2} people, got {len(people)}")
    mirror = np.asarray(mirror, dtype=np.int64)
    mesh = mean_face(samples, mirror)
    weights = _person_weights(samples)
    weights = weights / weights.sum()
    empty = np.zeros(FIT_POINTS * 3)
    rigid = PoseModel(mesh, mirror, empty, np.zeros((0, FIT_POINTS * 3)), np.zeros(1), np.ones(1), np.zeros(2))
    residuals, nods, targets = [], [], []
    for s in samples:
        q, own = rigid_fit(s.mesh, rigid)
        residuals.append(own - mesh)
        nods.append(rigid.features(own)[-1])
        targets.append(s.official_angles[1] - _pitch(q))
    residual = np.stack(residuals)
    symmetric = ((residual + residual[:, mirror[:FIT_POINTS]] * _MIRROR_X) / 2.0).reshape(len(samples), -1)
    shape_mean = weights @ symmetric
    centred = symmetric - shape_mean
    _, _, vt = np.linalg.svd(centred * np.sqrt(weights)[:, None], full_matrices=False)
    shape_modes = vt[:modes]
    features = np.column_stack([centred @ shape_modes.T, nods])
    feature_mean = weights @ features
    feature_scale = np.sqrt(weights @ (features - feature_mean) ** 2)
    design = np.column_stack([(features - feature_mean) / feature_scale, np.ones(len(samples))])
    penalty = ridge * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    coef = np.linalg.solve(design.T @ (weights[:, None] * design) + penalty, design.T @ (weights * np.asarray(targets)))
    info = {"people": len(people), "photos": len(samples), "modes": modes, "ridge": ridge}
    return PoseModel(mesh, mirror, shape_mean, shape_modes, feature_mean, feature_scale, coef,
                     None if dlib_box_map is None else np.asarray(dlib_box_map, dtype=np.float64),
                     {**info, **(meta or {})})


def _pitch(q: np.ndarray) -> float:
    return float(label_angles(label_from_rotation(q)[None])[1][0])


def estimate(model: PoseModel, sample: LabelledMesh) -> tuple[float, float]:
    """The model's (yaw, pitch) in degrees for a sample's mesh (the aligner's own steps)."""
    yaw, pitch = label_angles(label_from_rotation(fit_mesh_rotation(sample.mesh, model))[None])
    return float(yaw[0]), float(pitch[0])


def leave_one_person_out(samples: Sequence[LabelledMesh], mirror: np.ndarray, *,
                         evaluate: Callable[[LabelledMesh], bool] = lambda s: True, **fit) -> list[PoseError]:
    """For each person: fit on everyone else, estimate that person's photos (those ``evaluate``
    accepts). Returns one :class:`PoseError` per evaluated photo."""
    out = []
    for person in sorted({s.person for s in samples}):
        model = fit_pose_model([s for s in samples if s.person != person], mirror, **fit)
        for s in samples:
            if s.person == person and evaluate(s):
                est_yaw, est_pitch = estimate(model, s)
                out.append(PoseError(person, s.source, *s.official_angles, est_yaw, est_pitch))
    return out


def summarize(errors: Iterable[PoseError]) -> dict:
    """Per-person and overall statistics of absolute errors (degrees).

    Returns ``{"people": {person: {...}}, "per_person": {...}, "per_photo": {...}}``: for each
    person their photo count, yaw range and median / max absolute yaw and pitch error;
    ``per_person`` gives median / p90 / max over people of each person's *median* error (every
    person counts once); ``per_photo`` the same over all photos, and its max is the worst photo.
    """
    errors = list(errors)
    people: dict[str, dict] = {}
    for person in sorted({e.person for e in errors}):
        mine = [e for e in errors if e.person == person]
        ey = np.abs([e.yaw_error for e in mine])
        ep = np.abs([e.pitch_error for e in mine])
        yaws = [e.yaw for e in mine]
        people[person] = {"photos": len(mine), "yaw_range": [float(min(yaws)), float(max(yaws))],
                          "pitch_range": [float(min(e.pitch for e in mine)), float(max(e.pitch for e in mine))],
                          "yaw_median": float(np.median(ey)), "yaw_max": float(ey.max()),
                          "pitch_median": float(np.median(ep)), "pitch_max": float(ep.max()),
                          "pitch_bias": float(np.mean([e.pitch_error for e in mine]))}

    def stats(values) -> dict:
        v = np.abs(np.asarray(values, dtype=np.float64))
        return {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)), "max": float(v.max())}

    return {"people": people,
            "per_person": {"yaw": stats([p["yaw_median"] for p in people.values()]),
                           "pitch": stats([p["pitch_median"] for p in people.values()])},
            "per_photo": {"yaw": stats([e.yaw_error for e in errors]),
                          "pitch": stats([e.pitch_error for e in errors])}}


def format_summary(summary: dict) -> str:
    """The per-person table and the summary lines of :func:`summarize` as text."""
    lines = [f"{'person':44s} {'photos':>6s} {'yaw range':>13s} {'pitch range':>12s} "
             f"{'|yaw err| med/max':>18s} {'|pitch err| med/max':>20s} {'pitch bias':>10s}"]
    for person, p in summary["people"].items():
        lines.append(f"{person[:44]:44s} {p['photos']:6d} {p['yaw_range'][0]:6.1f}..{p['yaw_range'][1]:5.1f} "
                     f"{p['pitch_range'][0]:5.1f}..{p['pitch_range'][1]:5.1f} "
                     f"{p['yaw_median']:8.2f} /{p['yaw_max']:6.2f}   {p['pitch_median']:9.2f} /{p['pitch_max']:6.2f}"
                     f" {p['pitch_bias']:+10.2f}")
    for scope, title in (("per_person", "over people (each person's median)"), ("per_photo", "over all photos")):
        s = summary[scope]
        lines.append(f"{title:40s} yaw median {s['yaw']['median']:.2f} p90 {s['yaw']['p90']:.2f} "
                     f"max {s['yaw']['max']:.2f} | pitch median {s['pitch']['median']:.2f} "
                     f"p90 {s['pitch']['p90']:.2f} max {s['pitch']['max']:.2f}")
    return "\n".join(lines)


def read_labelled_index(index: str | Path, *, kinds: Sequence[str] | None = None,
                        every: int = 1) -> list[dict]:
    """Items of a labelled-photo index (``{"items": [{"image", "kind", "label", ...}]}``, the
    layout of the calibration data), image paths made absolute; optionally only some ``kinds``
    and every ``every``-th item."""
    index = Path(index)
    items = json.loads(index.read_text())["items"]
    items = [dict(it, image=str(index.parent / it["image"])) for it in items if kinds is None or it["kind"] in kinds]
    return items[::every]
