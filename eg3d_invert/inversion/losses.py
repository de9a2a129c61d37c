"""Losses of the inversion: LPIPS (with explicit weight handling), pixel L2, noise regulariser.

LPIPS comes from the ``lpips`` package. Its small linear heads ship inside the package; the
ImageNet backbone (VGG16 or AlexNet) is torchvision's and is *not* in any wheel. ``lpips``
would ask torchvision for it with ``pretrained=True``, which reads the torch hub cache and
silently downloads on a miss. :func:`load_lpips` instead builds the network with a random
backbone (no I/O at all) and then loads the backbone from the hub cache itself, so:

* a present weight file is never re-fetched and no network call is ever made for it;
* a missing file is downloaded to the hub cache with a progress bar (verified against the
  hash prefix in torchvision's file name), or, offline, raises
  :class:`~eg3d_invert.errors.MissingWeightsError` saying which file to put where.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._io import ensure_writable_dir
from ..errors import MissingWeightsError, OutputError, UnsafeCheckpointError, first_line
from ..pretrained.safe_pickle import load_failure

#: torchvision's ImageNet weight files used by LPIPS, as named in the hub cache.
BACKBONE_FILES: dict[str, tuple[str, str]] = {
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}


def _download_url_to_file(url: str, dst: str, hash_prefix: str | None, progress: bool) -> None:
    """Indirection so tests can make the download fail fast without touching the network."""
    torch.hub.download_url_to_file(url, dst, hash_prefix=hash_prefix, progress=progress)


def backbone_weights_path(net: str) -> Path:
    """Where the backbone of ``net`` (``'vgg'`` or ``'alex'``) is expected:
    ``$TORCH_HOME/hub/checkpoints/<torchvision file name>`` (torch's default TORCH_HOME is
    ``~/.cache/torch``)."""
    if net not in BACKBONE_FILES:
        raise ValueError(f"net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net][0]


def ensure_backbone_weights(net: str, *, download: bool = True, progress: bool = True) -> Path:
    """The path of ``net``'s ImageNet weights, downloading them into the hub cache if missing.

    Raises:
        MissingWeightsError: the file is missing and could not (or may not) be downloaded.
    """
    path = backbone_weights_path(net)
    if path.is_file():
        return path
    name, url = BACKBONE_FILES[net]
    how = (f"LPIPS ({net}) needs torchvision's ImageNet weights {name}: download {url} and put it at {path} "
           f"(or set TORCH_HOME to a folder whose hub/checkpoints/ holds it)")
    if not download:
        raise MissingWeightsError(f"{how}; downloading was disabled")
    try:
        ensure_writable_dir(path.parent, "LPIPS weight folder")
    except OutputError as exc:
        torch_home = os.environ.get("TORCH_HOME")
        raise MissingWeightsError(f"{how}; it cannot be downloaded there: {exc}"
                                  + (f" (TORCH_HOME is {torch_home!r})" if torch_home else "")) from None
    # torchvision's convention: the file name ends in the first hex digits of its SHA-256.
    hash_prefix = name.rsplit("-", 1)[-1].split(".", 1)[0]
    try:
        _download_url_to_file(url, str(path), hash_prefix, progress)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as exc:
        if path.exists():  # a partial or corrupt file must not be mistaken for the weights later
            path.unlink()
        raise MissingWeightsError(f"{how}; the download failed ({type(exc).__name__}: {exc})") from None
    return path


def _load_backbone(model: nn.Module, net: str, path: Path) -> None:
    """Copy torchvision's ``features.{i}.*`` tensors into lpips' ``slice{k}.{i}`` modules."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        failure = load_failure(path, exc, "LPIPS backbone weights")
        if isinstance(failure, UnsafeCheckpointError):
            raise failure from None
        raise MissingWeightsError(f"{path}: unreadable LPIPS backbone weights ({type(exc).__name__}: "
                                  f"{first_line(exc)}); delete it so it is downloaded again, or replace it") from None
    target = model.net
    index_to_module = {}
    for slice_name, sl in target.named_children():
        for idx, _ in sl.named_children():
            index_to_module[idx] = f"{slice_name}.{idx}"
    mapped, needed = {}, set(target.state_dict())
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "features" or parts[1] not in index_to_module:
            continue  # the classifier head, or layers LPIPS does not use
        mapped[f"{index_to_module[parts[1]]}.{'.'.join(parts[2:])}"] = value
    missing = needed - set(mapped)
    if missing:
        raise MissingWeightsError(f"{path}: not {net} ImageNet weights (lacks {sorted(missing)[:3]}...)")
    target.load_state_dict(mapped)


def load_lpips(net: str = "vgg", *, pretrained_backbone: bool = True, download: bool = True,
               progress: bool = True, device: str | torch.device | None = None) -> nn.Module:
    """An ``lpips.LPIPS`` module (v0.1 linear heads) in eval mode with gradients off.

    Args:
        net: ``'vgg'`` (the projection's loss) or ``'alex'`` (pivotal tuning's).
        pretrained_backbone: False keeps a *random* backbone: no file needed, fine for tests
            and for timing, meaningless as a perceptual metric. The module's
            ``backbone_pretrained`` attribute records which one it is.
        download: allow fetching a missing backbone file into the torch hub cache.
        progress: show a progress bar while downloading.
        device: where to put the module (default CPU).
    Raises:
        MissingWeightsError: the backbone file is missing and cannot be downloaded.
    """
    import lpips

    if net not in BACKBONE_FILES:
        raise ValueError(f"net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
    path = ensure_backbone_weights(net, download=download, progress=progress) if pretrained_backbone else None
    with warnings.catch_warnings():
        # torchvision warns that lpips passes the deprecated 'pretrained' argument.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    if path is not None:
        _load_backbone(model, net, path)
    model.backbone_pretrained = path is not None
    model.backbone_path = str(path) if path is not None else None
    return model.eval().requires_grad_(False).to(device or "cpu")


_SHARED: dict[tuple, nn.Module] = {}
_SHARED_LOCK = threading.Lock()


def shared_lpips(net: str, device: torch.device | str = "cpu") -> nn.Module:
    """An LPIPS model (:func:`load_lpips`) built once per process.

    Building one costs seconds (torchvision constructs the whole ImageNet network before the
    weights are loaded), and the models are read-only at inference (eval mode, no gradients
    for their parameters), so every :class:`~eg3d_invert.api.Inverter` of the process shares
    them. The key includes the weight file's path, size and mtime, so a different
    ``TORCH_HOME`` or a replaced file gives a new model.
    """
    path = backbone_weights_path(net)
    stat = path.stat() if path.is_file() else None
    key = (net, str(torch.device(device)), str(path), stat.st_size if stat else None,
           stat.st_mtime_ns if stat else None)
    with _SHARED_LOCK:
        model = _SHARED.get(key)
        if model is None:
            model = load_lpips(net, device=device)
            # The file may have just been downloaded: key the model by what is now on disk.
            stat = path.stat() if path.is_file() else None
            key = key[:3] + (stat.st_size if stat else None, stat.st_mtime_ns if stat else None)
            _SHARED[key] = model
        return model


class PerceptualDistance(nn.Module):
    """LPIPS to one fixed target, with the target's features computed once.

    Equal to ``lpips_model(image, target)`` (inputs in [-1, 1]) but half the cost per call,
    which matters when the same photo is compared hundreds of times. Images larger than
    ``resolution`` are area-downsampled to it first (the official projector's 256x256).

    Args:
        lpips_model: from :func:`load_lpips` (or any ``lpips.LPIPS``).
        target: ``(1, 3, H, W)`` float in [-1, 1].
        resolution: downsample side, or None to compare at full size.
    """

    def __init__(self, lpips_model: nn.Module, target: torch.Tensor, resolution: int | None = None):
        super().__init__()
        self.lpips_model = lpips_model
        self.resolution = resolution
        with torch.no_grad():
            self._target_feats = [f.detach() for f in self._features(self._resize(target))]

    def _resize(self, img: torch.Tensor) -> torch.Tensor:
        if self.resolution is not None and img.shape[-1] > self.resolution:
            img = F.interpolate(img, size=(self.resolution, self.resolution), mode="area")
        return img

    def _features(self, img: torch.Tensor) -> list[torch.Tensor]:
        import lpips

        m = self.lpips_model
        outs = m.net.forward(m.scaling_layer(img))
        return [lpips.normalize_tensor(o) for o in outs]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``image (N, 3, H, W)`` in [-1, 1] -> LPIPS ``(N,)``."""
        m = self.lpips_model
        feats = self._features(self._resize(image))
        total = 0.0
        for k, (f, t) in enumerate(zip(feats, self._target_feats)):
            total = total + m.lins[k]((f - t) ** 2).mean(dim=(2, 3), keepdim=True)
        return total.reshape(-1)


def noise_regularization(noise_maps: list[torch.Tensor]) -> torch.Tensor:
    """Multi-scale autocorrelation penalty of noise maps (NVIDIA's StyleGAN2 projector).

    For each ``(H, W)`` map and its 2x2 average-pooled versions down to 8x8, the squared mean of
    the product with itself shifted by one pixel horizontally and vertically (wrapping round)
    is summed. White noise scores ~0; maps that have absorbed image structure score high.
    """
    reg = noise_maps[0].new_zeros(())
    for v in noise_maps:
        noise = v[None, None]
        while True:
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg

