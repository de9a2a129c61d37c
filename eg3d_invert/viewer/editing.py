"""Latent edits of the viewer: SeFa directions, truncation, interpolation and style mixing.

**SeFa** (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021). Every
modulated convolution turns ``w`` into styles with an affine map ``s = A w + b``; moving ``w`` by
``d`` moves the styles by ``A d``. The unit directions that move the styles the most are the top
eigenvectors of ``A^T A``, with ``A`` the affine weights of all the backbone's modulated
convolutions stacked. Like the paper's released implementation, each row of ``A`` (one style
channel) is scaled to unit length first, so layers with large weights do not drown the others.
This needs nothing but the checkpoint's weights: no classifier, no samples, no download.

What is ours: the directions come from the **base** checkpoint (the one every result of that
checkpoint was tuned from), so one slider means the same thing for all of them, and they are
cached per checkpoint SHA-256 under the eg3d-invert cache folder. Each direction's sign is fixed
(its largest component positive) so that a slider does not flip between machines, and its
slider unit is the spread of the mapping network's ``w`` along it (``sigma``, measured on a
fixed set of samples), so "+2" is two standard deviations of the training distribution.

**Order of an edit** (:func:`apply_edit`): interpolation / style mixing with another result's
latent (on all, the coarse or the fine ``ws`` rows), then truncation toward the average ``w``
(``psi``: 1 = none, 0 = the average face), then the SeFa offsets.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .._io import atomic_path
from ..errors import ConfigError
from ..generator.stylegan2 import SynthesisLayer

#: Directions kept per checkpoint (the sliders show the first few).
NUM_DIRECTIONS = 32
#: Mapping samples that measure each direction's spread (``sigma``); fixed seed.
SIGMA_SAMPLES = 2000
SIGMA_SEED = 0
#: Bump when the computation changes, so that old cache files are recomputed.
SEFA_VERSION = 1

#: Edit limits: SeFa offsets in sigma units, truncation psi, blend weight.
MAX_OFFSET = 10.0
PSI_RANGE = (0.0, 2.0)
LAYER_GROUPS = ("all", "coarse", "fine")


# --- SeFa -----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # holds arrays
class SefaDirections:
    """Closed-form latent directions of one checkpoint.

    Attributes:
        vectors: ``(K, w_dim)`` float32 unit directions in W, strongest first.
        eigenvalues: ``(K,)`` float64 eigenvalues of ``A^T A`` (descending).
        sigma: ``(K,)`` float32 standard deviation of mapped ``w`` along each direction.
        key: the checkpoint SHA-256 they were computed for.
    """

    vectors: np.ndarray
    eigenvalues: np.ndarray
    sigma: np.ndarray
    key: str

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def offset(self, coefficients: Mapping[int, float]) -> np.ndarray:
        """``sum_k c_k sigma_k n_k``: the ``(w_dim,)`` step of slider values in sigma units."""
        step = np.zeros(self.vectors.shape[1], dtype=np.float64)
        for k, c in coefficients.items():
            step += float(c) * float(self.sigma[k]) * self.vectors[k].astype(np.float64)
        return step.astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` atomically (arrays plus a JSON header; no pickles)."""
        meta = json.dumps({"version": SEFA_VERSION, "key": self.key, "sigma_samples": SIGMA_SAMPLES,
                           "sigma_seed": SIGMA_SEED})
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, vectors=self.vectors, eigenvalues=self.eigenvalues, sigma=self.sigma,
                         meta=np.array(meta))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, key: str) -> "SefaDirections | None":
        """Read a cache file; None if it is missing, unreadable, stale or for another checkpoint."""
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                if meta.get("version") != SEFA_VERSION or meta.get("key") != key:
                    return None
                vectors, eig, sigma = f["vectors"], f["eigenvalues"], f["sigma"]
        except (OSError, ValueError, KeyError):
            return None
        if vectors.ndim != 2 or eig.shape != sigma.shape or eig.shape != (vectors.shape[0],):
            return None
        return cls(vectors.astype(np.float32), eig.astype(np.float64), sigma.astype(np.float32), key)


def style_affines(G) -> np.ndarray:
    """``A``: the affine weights ``(sum of style channels, w_dim)`` float64 of every modulated
    convolution of the tri-plane backbone, as applied to ``w`` (equalised-learning-rate gain
    included). The ToRGB layers and the super-resolution are left out, as SeFa leaves out the
    output layers."""
    rows = [m.affine.effective_weight().detach().double().cpu()
            for m in G.backbone.synthesis.modules() if isinstance(m, SynthesisLayer)]
    if not rows:
        raise ValueError("the generator has no modulated convolutions")
    return torch.cat(rows, 0).numpy()


def sefa_directions(G, key: str, count: int = NUM_DIRECTIONS, *, conditioning: torch.Tensor | None = None
                    ) -> SefaDirections:
    """Compute the top ``count`` SeFa directions of generator ``G`` (see the module docstring).

    ``conditioning``: the ``(1, 25)`` label the mapping network is conditioned on when measuring
    ``sigma`` (the official scripts use the frontal camera); zeros if None.
    """
    A = style_affines(G)
    A = A / np.linalg.norm(A, axis=1, keepdims=True).clip(1e-12)
    # Right singular vectors of A are the eigenvectors of A^T A, without forming it.
    _, s, vt = np.linalg.svd(A, full_matrices=False)
    count = min(count, vt.shape[0])
    vectors = vt[:count]
    # Fix each sign: the largest component positive.
    rows = np.arange(count)
    vectors = vectors * np.sign(vectors[rows, np.abs(vectors).argmax(1)])[:, None]
    sigma = _spread(G, vectors, conditioning)
    return SefaDirections(vectors.astype(np.float32), (s[:count] ** 2).astype(np.float64), sigma, key)


def _spread(G, vectors: np.ndarray, conditioning: torch.Tensor | None) -> np.ndarray:
    """Standard deviation of mapped ``w`` along each direction, over fixed random ``z``."""
    gen = torch.Generator().manual_seed(SIGMA_SEED)
    z = torch.randn(SIGMA_SAMPLES, G.z_dim, generator=gen).to(G.device)
    c = torch.zeros(1, G.c_dim) if conditioning is None else conditioning.reshape(1, -1)[:, :G.c_dim]
    with torch.no_grad():
        w = G.mapping(z, c.to(G.device, torch.float32).expand(SIGMA_SAMPLES, -1))[:, 0]
    proj = w.double().cpu().numpy() @ vectors.T
    return proj.std(0).astype(np.float32)


def cached_sefa_directions(G, key: str, cache_dir: Path | None, *, conditioning: torch.Tensor | None = None,
                           count: int = NUM_DIRECTIONS) -> tuple[SefaDirections, str | None]:
    """SeFa directions of ``G`` for checkpoint ``key`` (its SHA-256), from ``cache_dir`` if there.

    Computed and written (atomically) otherwise. Returns the directions and a warning (None if
    all went well): an unwritable cache folder only costs the recomputation next time.
    """
    if not re.fullmatch(r"[0-9a-f]{16,128}", key):
        raise ValueError(f"checkpoint key must be a hex digest, got {key!r}")
    path = None if cache_dir is None else Path(cache_dir) / f"{key}.npz"
    if path is not None and path.is_file():
        found = SefaDirections.load(path, key)
        if found is not None and len(found) >= min(count, G.w_dim):
            return found, None
    directions = sefa_directions(G, key, count, conditioning=conditioning)
    warning = None
    if path is not None:
        try:
            directions.save(path)
        except OSError as exc:
            warning = f"SeFa directions not cached ({path.parent}: {exc.strerror or exc})"
    return directions, warning


# --- edits ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """One edit of a result's latent; the identity by default.

    Attributes:
        sefa: ``((direction index, offset in sigma units), ...)``, sorted, no zero offsets.
        psi: truncation toward the average ``w`` (1 = none, 0 = the average face).
        other: id of another loaded result to interpolate / mix with (None: no other).
        blend: 0 = this result's latent, 1 = the other's, on the rows of ``layers``.
        layers: ``'all'`` (interpolation), ``'coarse'`` or ``'fine'`` (style mixing).
    """

    sefa: tuple[tuple[int, float], ...] = ()
    psi: float = 1.0
    other: str | None = None
    blend: float = 0.0
    layers: str = "all"

    def __post_init__(self):
        sefa = {}
        for k, v in self.sefa:
            if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
                raise ConfigError(f"sefa: direction index must be a non-negative integer, got {k!r}")
            if not _finite(v) or abs(v) > MAX_OFFSET:
                raise ConfigError(f"sefa: offset of direction {k} must be within ±{MAX_OFFSET:g}, got {v!r}")
            if k in sefa:
                raise ConfigError(f"sefa: direction {k} given twice")
            if v != 0:
                sefa[int(k)] = float(v)
        object.__setattr__(self, "sefa", tuple(sorted(sefa.items())))
        if not _finite(self.psi) or not PSI_RANGE[0] <= self.psi <= PSI_RANGE[1]:
            raise ConfigError(f"psi must be within [{PSI_RANGE[0]:g}, {PSI_RANGE[1]:g}], got {self.psi!r}")
        object.__setattr__(self, "psi", float(self.psi))
        if not _finite(self.blend) or not 0 <= self.blend <= 1:
            raise ConfigError(f"blend must be within [0, 1], got {self.blend!r}")
        object.__setattr__(self, "blend", float(self.blend))
        if self.layers not in LAYER_GROUPS:
            raise ConfigError(f"layers must be one of {', '.join(LAYER_GROUPS)}, got {self.layers!r}")
        if self.blend > 0 and not self.other:
            raise ConfigError("blend needs other=ID (the result to interpolate or mix with)")
        if self.blend == 0:  # nothing taken from another result: one canonical form
            object.__setattr__(self, "other", None)
            object.__setattr__(self, "layers", "all")

    @property
    def is_identity(self) -> bool:
        return not self.sefa and self.psi == 1 and self.blend == 0

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> "Edit":
        """From query parameters: ``sefa=0:1.5,3:-2``, ``psi=0.7``, ``other=ID``, ``blend=0.5``,
        ``layers=all|coarse|fine`` (each optional)."""
        sefa = []
        text = params.get("sefa", "").strip()
        for item in filter(None, (t.strip() for t in text.split(","))):
            k, sep, v = item.partition(":")
            if not sep:
                raise ConfigError(f"sefa: {item!r} is not INDEX:OFFSET (e.g. sefa=0:1.5,3:-2)")
            sefa.append((_int(k, "sefa index"), _float(v, f"sefa offset of {k.strip()}")))
        return cls(sefa=tuple(sefa), psi=_float(params.get("psi", "1"), "psi"), other=params.get("other") or None,
                   blend=_float(params.get("blend", "0"), "blend"), layers=params.get("layers", "all"))

    def to_params(self) -> dict[str, str]:
        """Inverse of :meth:`from_params` (only what differs from the identity)."""
        out: dict[str, str] = {}
        if self.sefa:
            out["sefa"] = ",".join(f"{k}:{v:g}" for k, v in self.sefa)
        if self.psi != 1:
            out["psi"] = f"{self.psi:g}"
        if self.blend:
            out.update(other=str(self.other), blend=f"{self.blend:g}", layers=self.layers)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"sefa": [[k, v] for k, v in self.sefa], "psi": self.psi, "other": self.other,
                "blend": self.blend, "layers": self.layers}


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and math.isfinite(v)


def _float(text: str, name: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {text!r}")
    return value


def _int(text: str, name: str) -> int:
    try:
        return int(text.strip())
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {text!r}") from None


def coarse_rows(num_ws: int) -> int:
    """Rows ``[0, n)`` of ``ws`` that count as coarse: the first half (for EG3D's 14 rows, the
    blocks up to 32x32, which set pose, face shape and hair style; the rest set colours and
    fine detail)."""
    return num_ws // 2


def apply_edit(ws: torch.Tensor, edit: Edit, *, w_avg: torch.Tensor, directions: SefaDirections | None = None,
               other_ws: torch.Tensor | None = None) -> torch.Tensor:
    """The edited latent ``(1, num_ws, w_dim)`` of ``ws (1, num_ws, w_dim)`` (see the module docstring).

    Args:
        w_avg: ``(w_dim,)`` the generator's tracked average ``w``.
        directions: needed when ``edit.sefa`` is not empty.
        other_ws: ``(1, num_ws, w_dim)`` the other result's latent, needed when ``edit.blend > 0``.
    Raises:
        ConfigError: a direction index out of range, or a missing / mismatched other latent.
    """
    out = ws.detach().clone()
    if edit.blend > 0:
        if other_ws is None or other_ws.shape != ws.shape:
            raise ConfigError(f"other result {edit.other!r}: its latent does not fit this result's "
                              f"{tuple(ws.shape)}")
        n = coarse_rows(ws.shape[1])
        rows = {"all": slice(None), "coarse": slice(0, n), "fine": slice(n, None)}[edit.layers]
        out[:, rows] = torch.lerp(out[:, rows], other_ws.to(out)[:, rows], edit.blend)
    if edit.psi != 1:
        avg = w_avg.to(out).reshape(1, 1, -1)
        out = avg + edit.psi * (out - avg)
    if edit.sefa:
        if directions is None or edit.sefa[-1][0] >= len(directions):
            count = 0 if directions is None else len(directions)
            raise ConfigError(f"sefa: direction {edit.sefa[-1][0]} does not exist (this checkpoint has {count})")
        out = out + torch.from_numpy(directions.offset(dict(edit.sefa))).to(out)
    return out


__all__ = ["SefaDirections", "sefa_directions", "cached_sefa_directions", "style_affines", "Edit", "apply_edit",
           "coarse_rows", "NUM_DIRECTIONS"]
