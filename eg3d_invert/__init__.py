"""eg3d-invert: one portrait photo to a 3D head with NVIDIA's EG3D.

``from eg3d_invert import Inverter, InversionResult`` is the API for apps (see
:mod:`eg3d_invert.api`). They are imported on first access so that ``import eg3d_invert`` (and
``eg3d-invert --version``) stay cheap: torch, the face models and the renderer load only when used.
"""

__version__ = "0.1.0"

from ._lazy import lazy_exports

_LAZY = {"Inverter": ".api", "InversionResult": ".result"}

__all__ = ["Inverter", "InversionResult", "__version__"]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
