"""The results a viewer shows: loading them, edited latents and their planes, meshes, and Save.

Each result folder becomes a :class:`ResultSession`: the :class:`~eg3d_invert.InversionResult`
(loaded through the public API), the SeFa directions of its base checkpoint, the exact scenes of
the last few edits (tri-planes are the expensive part, so they are computed once per latent),
and a lock: the renders of one result run one at a time, whatever the number of requests.

Save (:meth:`ResultSession.save`) never touches the files of the result itself: every save gets a
new numbered folder ``RESULT/edits/0001/`` (created with ``mkdir``, which fails rather than
reuse a folder another save just took), with ``frame.png``, ``pivot.pt`` (the edited latent, a
:class:`~eg3d_invert.inversion.Pivot` file) and, written last, ``edit.json``; each is written
atomically, so a folder with ``edit.json`` is complete.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import PIL.Image
import torch

from .._io import write_json_atomic
from ..errors import CheckpointError, ConfigError, Eg3dInvertError
from ..render import Scene, extract_mesh
from ..render.views import save_png
from ..result_folder import ALIGNED_PNG
from .editing import Edit, SefaDirections, apply_edit, cached_sefa_directions, coarse_rows, style_affines
from .frames import FrameSpec, LiveSettings, coarse_edit_scene, coarse_skip, render_frame

#: Sub-folder of a result that Save writes into, and the files of one save.
EDITS_DIR = "edits"
FRAME_PNG, EDIT_PIVOT, EDIT_JSON = "frame.png", "pivot.pt", "edit.json"
EDIT_FORMAT, EDIT_VERSION = "eg3d-invert/edit", 1
#: Mesh files of a result folder the 3D view shows as they are (glb first: no conversion).
MESH_FILES = ("mesh.glb", "mesh.ply", "mesh.obj")
#: Exact scenes kept per result (each holds 25 MB of planes for ffhq512-128).
SCENE_CACHE = 4


class UnknownResultError(Eg3dInvertError, KeyError):
    """A result id that this viewer has not loaded."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown result"


class SaveError(Eg3dInvertError):
    """Save could not write into the result folder (permissions, disk full, ...)."""


@dataclass(eq=False)
class ResultSession:
    """One loaded result and what the viewer keeps for it.

    Attributes:
        id: the result's id in URLs (from its folder name, unique within the viewer).
        directory: the result folder.
        result: the loaded :class:`~eg3d_invert.InversionResult`.
        checkpoint: SHA-256 of its base checkpoint (results of one checkpoint can be mixed).
        directions: SeFa directions of that checkpoint.
        settings: preview / full-frame settings, resolved for this generator.
    """

    id: str
    directory: Path
    result: Any
    checkpoint: str
    directions: SefaDirections
    settings: LiveSettings
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _scenes: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _base_skip: torch.Tensor | None = field(default=None, repr=False)
    _meshes: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @property
    def generator(self):
        return self.result.generator

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/results`` lists for this result."""
        G = self.generator
        yaw, pitch = _angles(self.result)
        return {
            "id": self.id, "name": self.directory.name, "directory": str(self.directory),
            "checkpoint": self.checkpoint, "camera": {"yaw": yaw, "pitch": pitch},
            "image_resolution": int(G.img_resolution), "neural_resolution": int(G.neural_rendering_resolution),
            "preview_resolution": int(self.settings.preview_resolution),
            "num_ws": int(G.num_ws), "coarse_rows": coarse_rows(G.num_ws),
            "directions": [{"index": k, "sigma": round(float(self.directions.sigma[k]), 6),
                            "eigenvalue": round(float(self.directions.eigenvalues[k]), 6)}
                           for k in range(len(self.directions))],
            "saved_mesh": next((name for name in MESH_FILES if (self.directory / name).is_file()), None),
            "thumbnail": f"/files/{self.id}/{ALIGNED_PNG}",
        }

    # --- latents and scenes ---------------------------------------------------------------------

    def latent(self, edit: Edit, other: "ResultSession | None" = None) -> torch.Tensor:
        """The edited latent ``(1, num_ws, w_dim)`` (the pivot's ``ws`` for the identity edit)."""
        ws = self.result.scene.ws
        if edit.is_identity:
            return ws
        return apply_edit(ws, edit, w_avg=self.generator.w_avg, directions=self.directions,
                          other_ws=None if other is None else other.result.scene.ws)

    def scene(self, edit: Edit, other: "ResultSession | None" = None) -> Scene:
        """The exact scene (tri-planes) of the edited latent, from the cache when it is there."""
        if edit.is_identity:
            return self.result.scene
        scene = self._scenes.get(edit)
        if scene is None:
            base = self.result.scene
            scene = Scene.from_ws(self.generator, self.latent(edit, other), lookat=base.lookat, radius=base.radius)
            self._scenes[edit] = scene
            while len(self._scenes) > SCENE_CACHE:
                self._scenes.popitem(last=False)
        self._scenes.move_to_end(edit)
        return scene

    def preview_scene(self, edit: Edit, other: "ResultSession | None" = None) -> Scene:
        """The scene a preview is rendered from: exact if known or asked for, else the coarse
        approximation of :mod:`.frames`."""
        resolution = self.settings.coarse_edit_resolution
        if edit.is_identity or edit in self._scenes or resolution is None:
            return self.scene(edit, other)
        base = self.result.scene
        if self._base_skip is None:
            self._base_skip = coarse_skip(self.generator, base.ws, resolution)
        return coarse_edit_scene(base, self._base_skip, self.latent(edit, other), resolution)

    # --- outputs --------------------------------------------------------------------------------

    def frame(self, spec: FrameSpec, edit: Edit = Edit(), other: "ResultSession | None" = None) -> PIL.Image.Image:
        """One frame of the (edited) result. Call with :attr:`lock` held."""
        scene = self.preview_scene(edit, other) if spec.quality == "preview" else self.scene(edit, other)
        return render_frame(scene, spec, self.settings)

    def saved_mesh(self) -> Path | None:
        return next((self.directory / n for n in MESH_FILES if (self.directory / n).is_file()), None)

    def mesh_glb(self, edit: Edit = Edit(), other: "ResultSession | None" = None, level: float | None = None) -> bytes:
        """The coloured mesh as glb bytes: the result's own mesh file for the unedited latent
        (unless ``level`` asks for another iso-level), else extracted from the edited planes
        at :attr:`LiveSettings.mesh_resolution`. Call with :attr:`lock` held.

        Raises:
            EmptyMeshError: the density never reaches the level.
        """
        import trimesh

        saved = self.saved_mesh() if edit.is_identity and level is None else None
        if saved is not None:
            if saved.suffix == ".glb":
                return saved.read_bytes()
            return trimesh.load(saved, force="mesh", process=False).export(file_type="glb")
        key = (edit, level)
        if key not in self._meshes:
            kwargs = {} if level is None else {"level": float(level)}
            mesh = extract_mesh(self.scene(edit, other), resolution=self.settings.mesh_resolution, **kwargs)
            self._meshes[key] = mesh.export(file_type="glb")
            while len(self._meshes) > 2:
                self._meshes.popitem(last=False)
        self._meshes.move_to_end(key)
        return self._meshes[key]

    def save(self, spec: FrameSpec, edit: Edit = Edit(), other: "ResultSession | None" = None) -> dict[str, Any]:
        """Write the full-quality frame and the edited latent into a new ``edits/NNNN/`` folder of
        the result (see the module docstring). Call with :attr:`lock` held.

        Returns ``{'folder': path, 'files': [names], 'edit': ..., 'view': ...}``.
        Raises:
            SaveError: the folder cannot be written.
        """
        from ..inversion import Pivot

        spec = replace(spec, quality="full")
        image = self.frame(spec, edit, other)
        ws = self.latent(edit, other).detach().cpu()
        pivot = self.result.pivot
        try:
            folder = _new_numbered_folder(self.directory / EDITS_DIR)
            save_png(image, folder / FRAME_PNG)
            Pivot(ws=ws, camera=pivot.camera, space="w" if bool((ws == ws[:, :1]).all()) else "w+",
                  settings=dict(pivot.settings), source=pivot.source).save(folder / EDIT_PIVOT)
            record = {
                "format": EDIT_FORMAT, "version": EDIT_VERSION,
                "result": str(self.directory), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "view": {"yaw": spec.yaw, "pitch": spec.pitch, "kind": spec.kind},
                "edit": {**edit.to_dict(), "other": None if other is None else str(other.directory)},
                "sefa": {"checkpoint": self.checkpoint,
                         "sigma": {str(k): float(self.directions.sigma[k]) for k, _ in edit.sefa}},
                "files": {FRAME_PNG: "the frame as shown (full quality)",
                          EDIT_PIVOT: "the edited latent: eg3d_invert.inversion.Pivot.load(...).ws"},
            }
            write_json_atomic(folder / EDIT_JSON, record)
        except OSError as exc:
            raise SaveError(f"cannot save into {self.directory / EDITS_DIR}: {exc.strerror or exc}") from None
        return {"folder": str(folder), "files": [FRAME_PNG, EDIT_PIVOT, EDIT_JSON], "view": record["view"],
                "edit": record["edit"]}


def _angles(result) -> tuple[float, float]:
    """The photo's camera as geometric (yaw, pitch) degrees."""
    from ..camera import label_angles

    yaw, pitch = label_angles(result.camera.reshape(-1, 25)[:1].cpu())
    return round(float(yaw[0]), 3), round(float(pitch[0]), 3)


def _new_numbered_folder(parent: Path) -> Path:
    """Create and return ``parent/NNNN`` with the next free number (``mkdir`` is the reservation)."""
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name) for p in parent.iterdir() if re.fullmatch(r"\d{4,}", p.name)]
    for n in itertools.count(max(taken, default=0) + 1):
        folder = parent / f"{n:04d}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


class Viewer:
    """The results one viewer shows, by id.

    Build it with :meth:`load`; :func:`eg3d_invert.viewer.serve` puts it behind HTTP.
    """

    def __init__(self, sessions: Sequence[ResultSession], warnings: Sequence[str] = ()):
        if not sessions:
            raise ConfigError("a viewer needs at least one result")
        self.sessions: dict[str, ResultSession] = {s.id: s for s in sessions}
        if len(self.sessions) != len(sessions):
            raise ConfigError("result ids must be unique")
        self.warnings = list(warnings)

    @classmethod
    def load(cls, directories: Sequence[str | Path], *, device: str | torch.device = "cpu", base=None,
             settings: LiveSettings | None = None, sefa_cache: str | Path | None = "default",
             on_load: Callable[[Path], None] | None = None) -> "Viewer":
        """Load result folders (written by ``eg3d-invert`` or ``InversionResult.save``).

        Args:
            device: where the generators run (``'auto'``: the best available).
            base: the base checkpoint, when it is no longer where the results' reports say.
            settings: preview / full-frame settings (defaults by device).
            sefa_cache: folder of the SeFa cache (``'default'``: ``<eg3d-invert cache>/sefa``,
                None: no cache).
            on_load: called with each folder before it is loaded (progress messages).
        Raises:
            CheckpointError: a folder is not a result, or its base checkpoint cannot be found.
        """
        from .. import InversionResult
        from ..pretrained import cache_dir

        settings = settings or LiveSettings()
        cache = cache_dir() / "sefa" if sefa_cache == "default" else (None if sefa_cache is None else Path(sefa_cache))
        bases: list = []  # base generators already loaded: results of one checkpoint share one
        directions: dict[str, SefaDirections] = {}
        sessions, warnings = [], []
        ids = unique_ids([Path(d).name for d in directories])
        for directory, rid in zip(directories, ids):
            directory = Path(directory)
            if on_load is not None:
                on_load(directory)
            result = _load_result(InversionResult, directory, bases, base, device)
            G = result.generator
            reference = result.tuning.base if result.tuning.base is not None else G
            key = (result.settings.get("checkpoint") or {}).get("sha256") or _weights_key(reference)
            if key not in directions:
                conditioning = result.scene.cameras(0.0, 0.0).label
                directions[key], warning = cached_sefa_directions(reference, key, cache, conditioning=conditioning)
                if warning:
                    warnings.append(warning)
            sessions.append(ResultSession(rid, directory, result, key, directions[key], settings.for_generator(G)))
        return cls(sessions, warnings)

    def session(self, result_id: str | None) -> ResultSession:
        """The session of ``result_id``; raises :class:`UnknownResultError`."""
        if not result_id:
            raise ConfigError("result is missing (result=ID, see /api/results)")
        try:
            return self.sessions[result_id]
        except KeyError:
            raise UnknownResultError(f"unknown result {result_id!r} (known: {', '.join(self.sessions)})") from None

    def other(self, session: ResultSession, edit: Edit) -> ResultSession | None:
        """The result ``edit`` interpolates or mixes with, checked to share ``session``'s checkpoint."""
        if edit.other is None:
            return None
        other = self.session(edit.other)
        if other.checkpoint != session.checkpoint:
            raise ConfigError(f"other: {other.id!r} comes from another checkpoint than {session.id!r}; "
                              f"only results of one checkpoint can be mixed")
        return other

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.sessions.values()]


def _load_result(InversionResult, directory: Path, bases: list, base, device):
    """Load one result, reusing an already loaded base generator when its checkpoint matches."""
    for candidate in bases:
        try:
            return InversionResult.load(directory, base=candidate, device=device)
        except CheckpointError:
            continue  # another checkpoint (or not a result: reported by the last attempt below)
    result = InversionResult.load(directory, base=base, device=device)
    if result.tuning.base is not None:
        bases.append(result.tuning.base)
    return result


def _weights_key(G) -> str:
    """A SHA-256 of the style weights, for generators whose checkpoint hash is not recorded."""
    return hashlib.sha256(style_affines(G).tobytes()).hexdigest()


def unique_ids(names: Sequence[str]) -> list[str]:
    """URL-safe ids from folder names: lower case, ``[a-z0-9_-]``, numbered when repeated."""
    ids, seen = [], set()
    for name in names:
        stem = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "result"
        rid, k = stem, 1
        while rid in seen:
            k += 1
            rid = f"{stem}-{k}"
        seen.add(rid)
        ids.append(rid)
    return ids


__all__ = ["Viewer", "ResultSession", "UnknownResultError", "SaveError", "unique_ids", "EDITS_DIR"]
