"""EG3D's tri-plane generator in pure PyTorch (no custom CUDA extensions; CPU, CUDA and MPS).

Modules: :mod:`.triplane` (the generator and its decoder), :mod:`.stylegan2` (mapping network and
synthesis layers), :mod:`.superresolution`, :mod:`.rendering` (rays, sampling, compositing, the
ray marcher), :mod:`.planes` (the tri-plane feature lookup), :mod:`.kernels` (hand-written
autograd kernels) and :mod:`.ops` (StyleGAN2's operations).
"""

from .planes import PLANE_AXES, plane_table, sample_triplane_features
from .rendering import RenderSettings
from .superresolution import (SuperresolutionHybrid2X, SuperresolutionHybrid4X, SuperresolutionHybrid8X,
                              SuperresolutionHybrid8XDC)
from .triplane import OSGDecoder, TriPlaneGenerator

__all__ = [
    "TriPlaneGenerator", "OSGDecoder", "PLANE_AXES", "sample_triplane_features", "plane_table", "RenderSettings",
    "SuperresolutionHybrid2X", "SuperresolutionHybrid4X", "SuperresolutionHybrid8X", "SuperresolutionHybrid8XDC",
]
