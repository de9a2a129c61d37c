"""Released EG3D checkpoints: registry, cache, download and loading."""

from .cache import cache_dir, cached_path, is_cached
from .download import download, resolve_checkpoint
from .registry import DEFAULT_MODEL, ModelInfo, get_model_info, list_models
from .._io import file_sha256
from .._lazy import lazy_exports

# The torch-dependent names are imported on first use (PEP 562), so that the command line can
# read the registry (e.g. DEFAULT_MODEL) without importing torch.
_LAZY = {
    "resolve_device": "..devices",
    "checkpoint_record": ".loading", "describe_checkpoint": ".loading", "load_base_generator": ".loading",
    "load_generator": ".loading",
    "save_generator": ".native",
}

__all__ = sorted(["cache_dir", "cached_path", "is_cached", "download", "resolve_checkpoint", "DEFAULT_MODEL",
                  "ModelInfo", "get_model_info", "list_models", "file_sha256", *_LAZY])


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
