"""Frames of the live view: fast previews and full frames, rendered from tri-planes computed once.

A **full frame** is what the generator's own ``synthesis`` makes from these planes: the ray grid
at the checkpoint's neural resolution, its own depth sample counts (``full_sample_mult=1``, as
``gen_samples.py``; ``result.render()`` uses twice as many, as ``gen_videos.py``), then the
super-resolution. It costs less than a forward pass because the planes are reused.

A **preview** is the raw render (the first three feature channels, no super-resolution) on a
coarser ray grid with fewer depth samples: what a drag or a slider shows until it stops. On a
CPU the preview grid is half the neural resolution by default, since a full-resolution raw render
already takes longer than half a second there (see ``benchmarks/viewer.py``).

**Edited previews** need the planes of a new latent, and the StyleGAN backbone that makes them
costs more than a second on a 2-core CPU. So, unless ``coarse_edit_resolution`` is None, an edited
preview recomputes only the backbone's blocks up to that resolution and keeps the finer blocks'
contribution from the unedited planes: ``planes + up(skip_r(ws') - skip_r(ws))``, where ``skip_r``
is the ToRGB sum of the blocks up to ``r`` and ``up`` the later blocks' FIR upsampling. It is
exact for the coarse blocks (pose, shape, hair style) and leaves out how the edit changes the fine
blocks (colours, detail). Full frames, meshes and saved frames always use exact planes.

Kinds: ``image`` (the final image; in a preview, the raw render), ``depth`` (expected ray depth,
colour-mapped nearer-brighter with the background black, see :mod:`eg3d_invert.render.depth`),
``raw`` (the raw neural render, no super-resolution, at full or preview quality).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from typing import Mapping

import PIL.Image
import torch

from ..errors import ConfigError
from ..options import MAX_PITCH_DEG, MAX_YAW_DEG
from ..render import Scene, colorize_depth
from ..render.depth import DEFAULT_OPACITY_THRESHOLD
from ..render.views import tensor_to_pil

KINDS = ("image", "depth", "raw")
QUALITIES = ("preview", "full")


@dataclass(frozen=True)
class FrameSpec:
    """Which frame: camera angles (geometric degrees, as everywhere in eg3d-invert: yaw toward the
    subject's left, pitch with the camera above), ``kind`` and ``quality``."""

    yaw: float = 0.0
    pitch: float = 0.0
    kind: str = "image"
    quality: str = "full"

    def __post_init__(self):
        # The ranges of the rest of the tool (eg3d_invert.options): yaw in [-180, 180], pitch
        # strictly inside (-90, 90), where the camera's up direction is still defined.
        for name, limit, inclusive in (("yaw", MAX_YAW_DEG, True), ("pitch", MAX_PITCH_DEG, False)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
                and (abs(v) <= limit if inclusive else abs(v) < limit)
            if not ok:
                bounds = f"[-{limit:g}, {limit:g}]" if inclusive else f"(-{limit:g}, {limit:g})"
                raise ConfigError(f"{name} must be a number of degrees within {bounds}, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.quality not in QUALITIES:
            raise ConfigError(f"quality must be one of {', '.join(QUALITIES)}, got {self.quality!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> "FrameSpec":
        def number(name: str) -> float:
            text = params.get(name, "0")
            try:
                return float(text)
            except ValueError:
                raise ConfigError(f"{name} must be a number of degrees, got {text!r}") from None

        return cls(number("yaw"), number("pitch"), params.get("kind", "image"), params.get("quality", "full"))

    def to_dict(self) -> dict:
        return {"yaw": self.yaw, "pitch": self.pitch, "kind": self.kind, "quality": self.quality}


@dataclass(frozen=True)
class LiveSettings:
    """How previews and full frames are rendered (see the module docstring).

    Attributes:
        preview_resolution: preview ray grid; ``'auto'``: half the neural resolution on a CPU,
            the neural resolution on other devices.
        preview_samples: coarse depth samples per preview ray (and as many importance samples);
            at least 4, the fewest the importance sampler works with; never more than the
            checkpoint's own (48 + 48 for ffhq512-128).
        full_sample_mult: depth samples of a full frame (1: the checkpoint's own counts).
        coarse_edit_resolution: edited previews recompute the backbone up to this block
            resolution; None: all of it (exact); ``'auto'``: 32 on a CPU, None elsewhere.
        mesh_resolution: lattice of meshes extracted for edited latents.
    """

    preview_resolution: int | str = "auto"
    preview_samples: int = 12
    full_sample_mult: float = 1.0
    coarse_edit_resolution: int | str | None = "auto"
    mesh_resolution: int = 128

    def __post_init__(self):
        if self.preview_resolution != "auto" and not (isinstance(self.preview_resolution, int)
                                                      and self.preview_resolution >= 8):
            raise ConfigError(f"preview_resolution must be an integer >= 8, got {self.preview_resolution!r}")
        if not isinstance(self.preview_samples, int) or isinstance(self.preview_samples, bool) \
                or not 4 <= self.preview_samples <= 512:
            raise ConfigError(f"preview_samples must be an integer in [4, 512], got {self.preview_samples!r}")
        if not isinstance(self.full_sample_mult, (int, float)) or not 0 < self.full_sample_mult <= 8:
            raise ConfigError(f"full_sample_mult must be in (0, 8], got {self.full_sample_mult!r}")
        if not isinstance(self.mesh_resolution, int) or not 16 <= self.mesh_resolution <= 512:
            raise ConfigError(f"mesh_resolution must be an integer in [16, 512], got {self.mesh_resolution!r}")

    def for_generator(self, G) -> "LiveSettings":
        """These settings with the device-dependent defaults filled in for generator ``G``."""
        cpu = G.device.type == "cpu"
        blocks = G.backbone.synthesis.block_resolutions
        preview = self.preview_resolution
        if preview == "auto":
            preview = max(8, G.neural_rendering_resolution // 2) if cpu else G.neural_rendering_resolution
        coarse = self.coarse_edit_resolution
        if coarse == "auto":
            coarse = min(32, blocks[-1]) if cpu else None
        if coarse is not None and coarse not in blocks:
            raise ConfigError(f"coarse_edit_resolution must be one of the backbone's block resolutions "
                              f"{blocks} or None, got {coarse!r}")
        if coarse == blocks[-1]:
            coarse = None  # every block: that is the exact computation
        return replace(self, preview_resolution=preview, coarse_edit_resolution=coarse)

    def preview_sample_mult(self, G) -> float:
        """The ``sample_mult`` that gives :attr:`preview_samples` coarse samples with ``G``'s
        counts (half a sample of slack: the renderer truncates ``count * mult``)."""
        return min(1.0, (self.preview_samples + 0.5) / G.rendering_kwargs["depth_resolution"])


def render_frame(scene: Scene, spec: FrameSpec, settings: LiveSettings) -> PIL.Image.Image:
    """Render one frame of ``scene`` (settings resolved by :meth:`LiveSettings.for_generator`)."""
    G = scene.generator
    label = scene.cameras(spec.yaw, spec.pitch).label
    preview = spec.quality == "preview"
    resolution = settings.preview_resolution if preview else None
    mult = settings.preview_sample_mult(G) if preview else settings.full_sample_mult
    final = spec.kind == "image" and not preview
    with torch.no_grad():
        out = G.render(scene.planes, label, scene.ws, neural_rendering_resolution=resolution, deterministic=True,
                       sample_mult=mult, run_superresolution=final)
    if spec.kind == "depth":
        # Depth and opacity come with every render of the ray marcher (no separate pass).
        rgb = colorize_depth(out["image_depth"][0, 0].float().cpu().numpy(),
                             out["image_opacity"][0, 0].float().cpu().numpy() >= DEFAULT_OPACITY_THRESHOLD)
        return PIL.Image.fromarray(rgb, "RGB")
    return tensor_to_pil(out["image" if final else "image_raw"])[0]


def coarse_skip(G, ws: torch.Tensor, resolution: int) -> torch.Tensor:
    """The backbone's skip image (ToRGB sum) up to block ``resolution``: ``(1, 96, r, r)``."""
    with torch.no_grad():
        return G.backbone.synthesis(ws, max_resolution=resolution, noise_mode="const")


def coarse_edit_scene(base: Scene, base_skip: torch.Tensor, ws: torch.Tensor, resolution: int) -> Scene:
    """The preview scene of latent ``ws``: exact coarse blocks, fine blocks kept from ``base``.

    ``base_skip`` is :func:`coarse_skip` of ``base.ws`` at the same ``resolution``.
    """
    G = base.generator
    synthesis = G.backbone.synthesis
    with torch.no_grad():
        delta = coarse_skip(G, ws, resolution) - base_skip
        planes = base.planes + synthesis.upsample_skip(delta, base.planes.shape[-1]).view_as(base.planes)
    return Scene(G, planes, ws, base.lookat, base.radius)


def encode_png(image: PIL.Image.Image, compress_level: int = 1) -> bytes:
    """PNG bytes; level 1 compresses a 512x512 frame in a few milliseconds (level 6: ~10x that)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


__all__ = ["FrameSpec", "LiveSettings", "render_frame", "coarse_skip", "coarse_edit_scene", "encode_png",
           "KINDS", "QUALITIES"]
