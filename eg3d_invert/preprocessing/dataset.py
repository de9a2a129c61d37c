"""Aligning many photos into one EG3D dataset folder (used by ``eg3d-invert align``).

For each photo ``NAME.png`` (the 512x512 crop) and ``NAME.json`` (:meth:`AlignedFace.to_dict`
plus the crop's file name) are written, optionally ``previews/NAME.jpg``, and the folder's
``dataset.json`` in EG3D's format ``{"labels": [[file, [25 floats]], ...]}`` is updated so the
crops feed EG3D's tools directly. All files are written atomically; inputs are never
overwritten; a photo that fails is reported and the batch goes on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .._io import atomic_path, ensure_writable_dir, remove_temporaries, unique_name, write_json_atomic
from ..errors import Eg3dInvertError, OutputError, failure_message
from .aligner import AlignedFace, Aligner

DATASET_JSON = "dataset.json"
PREVIEW_DIR = "previews"


def unique_names(paths: Iterable[Path]) -> list[str]:
    """Output stems: the photo's stem, with ``_2``, ``_3``, ... when two photos share one
    (case-insensitively, for case-insensitive file systems)."""
    names: list[str] = []
    used: set[str] = set()
    for p in paths:
        name = unique_name(Path(p).stem or "photo", lambda n: n.lower() in used)
        used.add(name.lower())
        names.append(name)
    return names


@dataclass
class BatchResult:
    """Outcome for one input photo.

    Attributes:
        source: the input path.
        name: output stem.
        faces: aligned faces written (empty on failure).
        files: crop files written, relative to the output folder.
        error: one-line message if the photo failed.
        exception: the exception itself (for ``--debug`` tracebacks).
    """

    source: Path
    name: str
    faces: list[AlignedFace] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    error: str | None = None
    exception: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def preview_image(photo: np.ndarray, faces: list[AlignedFace]) -> np.ndarray:
    """The photo with each face's crop square, detection box, mesh and 5 points drawn ``(H, W, 3)``."""
    import cv2

    out = np.ascontiguousarray(photo.copy())
    scale = max(1.0, max(photo.shape[:2]) / 1000.0)
    thick = max(1, int(round(2 * scale)))
    for face in faces:
        corners = np.round(face.geometry.crop_corners()).astype(np.int32)
        cv2.polylines(out, [corners.reshape(-1, 1, 2)], True, (255, 200, 0), thick, cv2.LINE_AA)
        b = np.round(face.box).astype(int)
        cv2.rectangle(out, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (0, 160, 255), max(1, thick // 2))
        for x, y in face.landmarks[:, :2]:
            cv2.circle(out, (int(round(x)), int(round(y))), max(1, thick // 2), (0, 255, 0), -1)
        for x, y in face.points:
            cv2.circle(out, (int(round(x)), int(round(y))), 2 * thick, (255, 0, 0), -1, cv2.LINE_AA)
        text = f"#{face.face_index} yaw {face.yaw:+.1f} pitch {face.pitch:+.1f} roll {face.roll:+.1f}"
        cv2.putText(out, text, (int(b[0]), max(12, int(b[1]) - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5 * scale, (255, 255, 0), thick, cv2.LINE_AA)
    return out


def _same_file(a: Path, b_resolved: set[Path]) -> bool:
    return a.resolve() in b_resolved


def iter_align(paths: list[Path], out_dir: Path, aligner: Aligner, *, face_index: int = 0,
               all_faces: bool = False, preview: bool = False) -> Iterator[BatchResult]:
    """Align each photo and write its files into ``out_dir``; yields one result per photo.

    Expected errors (unreadable photo, no face, ...) become ``BatchResult.error``; any other
    exception also does (message prefixed "internal error"), so one photo never stops the batch.
    Call :func:`write_dataset` afterwards with the results.

    Raises:
        OutputError: ``out_dir`` cannot be written (checked before the first photo).
    """
    from PIL import Image

    out_dir = ensure_writable_dir(out_dir)
    for folder in (out_dir, out_dir / PREVIEW_DIR):
        remove_temporaries(folder, recursive=False)  # what a killed run left
    inputs = {p.resolve() for p in paths}
    for path, name in zip(paths, unique_names(paths)):
        result = BatchResult(path, name)
        try:
            image = aligner.read(path)
            if all_faces:
                faces = aligner.align_all(image, name=str(path))
            else:
                faces = [aligner.align(image, face_index=face_index, name=str(path))]
            written = []
            for face in faces:
                stem = f"{name}_face{face.face_index}" if all_faces else name
                png, js = out_dir / f"{stem}.png", out_dir / f"{stem}.json"
                for target in (png, js):
                    if _same_file(target, inputs):
                        raise Eg3dInvertError(f"{path}: writing {target} would overwrite an input photo; "
                                              f"choose another --out folder")
                face.save(png)
                write_json_atomic(js, {"image": png.name, **face.to_dict()})
                written.append(face)
                result.files.append(png.name)
            result.faces = written
            if preview:
                target = out_dir / PREVIEW_DIR / f"{name}.jpg"
                if not _same_file(target, inputs):
                    with atomic_path(target, suffix=".jpg") as tmp:
                        Image.fromarray(preview_image(image, written)).save(tmp, format="JPEG", quality=90)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad photo must not stop the batch
            result.error, result.exception = failure_message(exc, path), exc
        yield result


def write_dataset(out_dir: Path, results: Iterable[BatchResult]) -> Path:
    """Write/update ``out_dir/dataset.json`` with the labels of the faces written.

    Entries already in the file are kept if their image still exists and is not rewritten now,
    so a folder can be filled over several runs.
    """
    out_dir = Path(out_dir)
    path = out_dir / DATASET_JSON
    labels: dict[str, list[float]] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            for fname, label in old.get("labels") or []:
                if (out_dir / fname).is_file():
                    labels[str(fname)] = label
        except (OSError, ValueError, TypeError, AttributeError):
            labels = {}
    for r in results:
        for face, fname in zip(r.faces, r.files):
            labels[fname] = [float(v) for v in face.label]
    try:
        write_json_atomic(path, {"labels": [[k, v] for k, v in sorted(labels.items())]})
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the dataset file: {exc.strerror or exc}") from None
    return path
