"""Released EG3D checkpoints: registry, cache, download and loading."""

from .cache import cache_dir, cached_path, is_cached
from .download import download, resolve_checkpoint
from .registry import ModelInfo, get_model_info, list_models
from .._io import file_sha256
from ..devices import resolve_device
from .loading import checkpoint_record, describe_checkpoint, load_base_generator, load_generator
from .native import save_generator

__all__ = ["cache_dir", "cached_path", "is_cached", "download", "resolve_checkpoint", "ModelInfo", "get_model_info",
           "list_models", "describe_checkpoint", "file_sha256", "load_generator", "load_base_generator",
           "checkpoint_record", "resolve_device", "save_generator"]
