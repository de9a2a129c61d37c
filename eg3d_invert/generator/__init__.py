"""EG3D's tri-plane generator in pure PyTorch (no custom CUDA extensions; CPU, CUDA and MPS)."""

from .superresolution import (SuperresolutionHybrid2X, SuperresolutionHybrid4X, SuperresolutionHybrid8X,
                              SuperresolutionHybrid8XDC)
from .triplane import PLANE_AXES, OSGDecoder, TriPlaneGenerator, plane_table, sample_triplane_features

__all__ = [
    "TriPlaneGenerator", "OSGDecoder", "PLANE_AXES", "sample_triplane_features", "plane_table",
    "SuperresolutionHybrid2X", "SuperresolutionHybrid4X", "SuperresolutionHybrid8X", "SuperresolutionHybrid8XDC",
]
