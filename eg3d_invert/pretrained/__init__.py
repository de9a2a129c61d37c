"""Released EG3D checkpoints: registry, cache, download and loading."""

from .cache import cache_dir, cached_path, is_cached
from .download import download, resolve_checkpoint
from .registry import ModelInfo, get_model_info, list_models
