"""The released EG3D checkpoints: where they live, how big they are, what they are.

NVIDIA publishes the six EG3D generators named in ``docs/models.md`` of NVlabs/eg3d on the NGC
catalog (https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/eg3d). Each file is
fetched from ``NGC_URL_TEMPLATE`` (the pattern ``eg3d/visualizer.py`` uses).

NVIDIA publishes no sizes or checksums. The sizes and SHA-256 digests below were taken from
third-party Git-LFS mirrors of the same file names (see each entry's ``sha256_source``). Nobody
has confirmed that those mirrors hold the NGC bytes, so a mismatch after a download means
"the file differs from that mirror", not necessarily "the download is corrupt". The downloader
says so in its error message and can be told not to verify.

This module must stay import-light (no torch): the CLI's ``models`` command and the cache
helpers use it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..errors import UnknownModelError

#: The checkpoint the CLI and the API use when none is named.
DEFAULT_MODEL = "ffhq512-128"

#: Direct-download URL of one released checkpoint; ``{name}`` is the registry name (no ``.pkl``).
NGC_URL_TEMPLATE = "https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files/{name}.pkl"
#: The NGC catalog page, for people who prefer to download by hand.
NGC_CATALOG_URL = "https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/eg3d"

# Camera settings are the ``rendering_kwargs`` each dataset configuration of the official
# train.py writes into the checkpoint (avg_camera_pivot / avg_camera_radius), plus the focal
# gen_videos.py uses for that configuration (``--cfg FFHQ|AFHQ|Shapenet``). Focal lengths are
# normalised by the image size (intrinsics ``[[f,0,0.5],[0,f,0.5],[0,0,1]]``).
_FFHQ_CAMERA = dict(camera_pivot=(0.0, 0.0, 0.2), camera_radius=2.7, focal=4.2647)
_AFHQ_CAMERA = dict(camera_pivot=(0.0, 0.0, -0.06), camera_radius=2.7, focal=4.2647)
_SHAPENET_CAMERA = dict(camera_pivot=(0.0, 0.0, 0.0), camera_radius=1.7, focal=1.7074)

# Every digest below is of this kind; the prefix keeps that visible wherever the source is shown.
_THIRD_PARTY = "third-party mirror (not NVIDIA, not checked against NGC): "


@dataclass(frozen=True)
class ModelInfo:
    """One released EG3D generator.

    Attributes:
        name: registry name, the NGC file name without ``.pkl`` (e.g. ``"ffhq512-128"``).
        url: direct-download URL on NGC.
        dataset: training data, as in NVlabs/eg3d's ``docs/models.md``.
        description: one sentence on what the model is for.
        image_resolution: side of the final (super-resolved) image in pixels.
        neural_rendering_resolution: side of the volume-rendered raw image in pixels (the number
            after the dash in the name).
        sr_module: official super-resolution class name, or None when not known from a source.
        sr_module_source: where ``sr_module`` comes from and how sure it is.
        camera_pivot: look-at point ``(x, y, z)`` of the training cameras, world units
            (``rendering_kwargs['avg_camera_pivot']``).
        camera_radius: distance of the training cameras from the pivot, world units
            (``rendering_kwargs['avg_camera_radius']``).
        focal: default normalised focal length (divide pixel focal by image side).
        size_bytes: exact file size in bytes, or None when not known exactly.
        approx_size_bytes: rough size for display when the exact one is unknown, else None.
        sha256: lowercase hex SHA-256 of the file, or None when not known.
        sha256_source: where ``size_bytes``/``sha256`` come from (None if unknown); starts with
            "third-party mirror" for digests not published by NVIDIA.
        sha256_from_nvidia: True only for digests NVIDIA itself published (none so far).
        on_ngc: False when the file is believed to be missing from NGC (download will fail).
        notes: anything else a user should know, or "".
    """

    name: str
    url: str
    dataset: str
    description: str
    image_resolution: int
    neural_rendering_resolution: int
    sr_module: str | None
    sr_module_source: str
    camera_pivot: tuple[float, float, float]
    camera_radius: float
    focal: float
    size_bytes: int | None = None
    approx_size_bytes: int | None = None
    sha256: str | None = None
    sha256_source: str | None = None
    sha256_from_nvidia: bool = False
    on_ngc: bool = True
    notes: str = ""

    @property
    def filename(self) -> str:
        """File name on NGC and in the cache."""
        return f"{self.name}.pkl"

    def to_dict(self) -> dict:
        """JSON-ready dict of every field plus ``filename``."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["camera_pivot"] = list(self.camera_pivot)
        d["filename"] = self.filename
        return d


def _entry(name: str, **kw) -> ModelInfo:
    return ModelInfo(name=name, url=NGC_URL_TEMPLATE.format(name=name), **kw)


# The official train.py picks SuperresolutionHybrid8XDC for 512 px datasets and
# SuperresolutionHybrid2X for 128 px ones; only ffhq512-128 has been checked against the
# construction code (an inventory of the tensors the official code builds for it, which the
# tests compare with our generator).
_SR_8XDC_CHECKED = "official train.py run for NVlabs/eg3d's ffhq512-128 command (reference inventory)"
_SR_8XDC_RULE = "inferred: official train.py rule for 512 px data; not checked against the file"

_MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        _entry(
            "ffhq512-128", dataset="FFHQ", image_resolution=512, neural_rendering_resolution=128,
            description="FFHQ faces, fine-tuned to 128x128 neural rendering; the default for portraits.",
            sr_module="SuperresolutionHybrid8XDC", sr_module_source=_SR_8XDC_CHECKED, **_FFHQ_CAMERA,
            size_bytes=377_645_529,
            sha256="e737eeb9a3e1be1812164a70eec22e17b3cb3c57b45c306d01f7a54e58889298",
            sha256_source=_THIRD_PARTY + "Hugging Face llrt/G-NeRF commit 13b7ee8",
        ),
        _entry(
            "ffhqrebalanced512-128", dataset="FFHQ rebalanced", image_resolution=512,
            neural_rendering_resolution=128,
            description="FFHQ re-balanced for a more uniform pose distribution: better 3D shape and "
                        "steep-angle renders; 128x128 neural rendering.",
            sr_module="SuperresolutionHybrid8XDC", sr_module_source=_SR_8XDC_RULE, **_FFHQ_CAMERA,
            size_bytes=377_644_956,
            sha256="7f418947f38202a3c4c9de6e18d0617b380dd5e42c21ba78efe8cc235fde44a7",
            sha256_source=_THIRD_PARTY + "Hugging Face Space gwang-kim/DATID-3D commit d38c193, "
                                         "eg3d/pretrained/ffhqrebalanced512-128.pkl",
        ),
        _entry(
            "ffhqrebalanced512-64", dataset="FFHQ rebalanced", image_resolution=512,
            neural_rendering_resolution=64,
            description="FFHQ re-balanced, 64x64 neural rendering (faster, softer).",
            sr_module="SuperresolutionHybrid8XDC", sr_module_source=_SR_8XDC_RULE, **_FFHQ_CAMERA,
        ),
        _entry(
            "afhqcats512-128", dataset="AFHQv2 cats", image_resolution=512,
            neural_rendering_resolution=128,
            description="AFHQ cat faces, fine-tuned from FFHQ with ADA; 128x128 neural rendering.",
            # Secondary sources name SuperresolutionHybrid4X for this file, but the official 4X
            # module asserts img_resolution == 256 while the name says 512: unresolved.
            sr_module=None,
            sr_module_source="unknown: SuperresolutionHybrid4X is reported, which the official code "
                             "builds only for 256 px output; read it from the file",
            **_AFHQ_CAMERA,
            approx_size_bytes=369_000_000,
            sha256="6bf73d5d1352685ff1bdf68d8c4f64ae2b05ca427a8e757601021901a1ee2672",
            sha256_source=_THIRD_PARTY + "Hugging Face gwang-kim/datid3d-finetuned-eg3d-models, "
                                         "file nvidia_afhqcats512-128.pkl (exact size not recorded)",
        ),
        _entry(
            "shapenetcars128-64", dataset="ShapeNet cars", image_resolution=128,
            neural_rendering_resolution=64,
            description="ShapeNet cars on a white background; 64x64 neural rendering, 128 px output.",
            sr_module="SuperresolutionHybrid2X",
            sr_module_source="inferred: official train.py rule for 128 px data; not checked against the file",
            **_SHAPENET_CAMERA,
            notes="Cameras look at the origin from radius 1.7; ray_start/ray_end are 'auto'.",
        ),
        _entry(
            "ffhq512-64", dataset="FFHQ", image_resolution=512, neural_rendering_resolution=64,
            description="FFHQ faces, first training stage at 64x64 neural rendering.",
            sr_module="SuperresolutionHybrid8XDC", sr_module_source=_SR_8XDC_RULE, **_FFHQ_CAMERA,
            on_ngc=False,
            notes="Listed in NVlabs/eg3d's docs/models.md but apparently not on NGC (the NGC bundle as "
                  "checked by In-N-Out's link script holds the other five; an inference, not "
                  "confirmed): the download will probably fail with HTTP 404.",
        ),
    ]
}


def list_models() -> list[ModelInfo]:
    """All known checkpoints, in the order of the table above (the default first)."""
    return list(_MODELS.values())


def _normalise(name: str) -> str:
    name = name.strip().lower()
    return name[: -len(".pkl")] if name.endswith(".pkl") else name


def find_model(name: str) -> ModelInfo | None:
    """The entry for ``name`` (case-insensitive, ``.pkl`` optional), or None."""
    return _MODELS.get(_normalise(name))


def find_model_by_url(url: str) -> ModelInfo | None:
    """The entry whose download URL is exactly ``url``, or None."""
    return next((m for m in _MODELS.values() if m.url == url), None)


def get_model_info(name: str) -> ModelInfo:
    """The entry for ``name``; accepts ``"ffhq512-128"`` or ``"FFHQ512-128.pkl"``.

    Raises:
        UnknownModelError: ``name`` is not a released checkpoint. The message lists the known
            names and, when there is one, the closest match.
    """
    info = find_model(name)
    if info is not None:
        return info
    known = list(_MODELS)
    close = difflib.get_close_matches(_normalise(name), known, n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise UnknownModelError(f"unknown checkpoint name {name!r}; {hint}known: {', '.join(known)}")
