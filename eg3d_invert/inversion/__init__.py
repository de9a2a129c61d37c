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
"""

from ._common import Progress, ProgressCallback, prepare_image
from .camera_refine import CameraCorrection
from .losses import BACKBONE_FILES, PerceptualDistance, backbone_weights_path, load_lpips, noise_regularization
from .project import learning_rate_at, project, w_statistics
from .results import Pivot, TuningResult
from .settings import (PROJECTION_PRESETS, TUNING_PRESETS, CameraRefinementSettings, ProjectionSettings,
                       TuningSettings)
from .tune import tune

__all__ = [
    "project", "tune", "Pivot", "TuningResult", "ProjectionSettings", "TuningSettings", "CameraRefinementSettings",
    "PROJECTION_PRESETS", "TUNING_PRESETS", "load_lpips", "backbone_weights_path", "BACKBONE_FILES",
    "PerceptualDistance", "noise_regularization", "Progress", "ProgressCallback", "prepare_image",
    "CameraCorrection", "learning_rate_at", "w_statistics",
]
