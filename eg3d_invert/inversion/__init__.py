"""Inversion of one aligned photo into EG3D: projection to W/W+ and pivotal tuning (PTI).

Typical use::

    from eg3d_invert.pretrained import load_generator
    from eg3d_invert.inversion import project, tune

    G = load_generator("ffhq512-128")
    pivot = project(G, photo_uint8, camera)          # EG3D-projector defaults, space='w'
    result = tune(G, pivot, photo_uint8)             # PTI defaults; G is left untouched
    pivot.save("photo_w.pt"); pivot.save("photo_w.npy")
    result.save_generator("photo_tuned.safetensors") # delta against G's checkpoint
    images = result.render(camera)["image"]          # (1, 3, 512, 512) about [-1, 1]

``preset='official'`` (the default) is the published values; ``preset='fast'`` this project's
schedule of half the steps (see :mod:`.settings` for it and for every knob).

Modules: :mod:`.projection` (``project``), :mod:`.tuning` (``tune``), :mod:`.losses` (LPIPS, its
per-process cache, the noise regulariser), :mod:`.results` (``Pivot``, ``TuningResult`` and their
files), :mod:`.settings`, :mod:`.camera_refine`.
"""

from .._lazy import lazy_exports

# The names below are imported on first use (PEP 562), so that the command line can read the
# settings and presets (a torch-free module) without importing torch.
_LAZY = {
    "Progress": "._common", "ProgressCallback": "._common", "prepare_image": "._common",
    "CameraCorrection": ".camera_refine",
    "BACKBONE_FILES": ".losses", "PerceptualDistance": ".losses", "backbone_weights_path": ".losses",
    "load_lpips": ".losses", "noise_regularization": ".losses", "shared_lpips": ".losses",
    "project": ".projection", "learning_rate_at": "._common", "w_statistics": ".projection",
    "tune": ".tuning",
    "Pivot": ".results", "TuningResult": ".results",
    "PROJECTION_PRESETS": ".settings", "TUNING_PRESETS": ".settings", "CameraRefinementSettings": ".settings",
    "ProjectionSettings": ".settings", "TuningSettings": ".settings", "resolve_settings": ".settings",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
