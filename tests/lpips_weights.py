"""Random LPIPS backbones saved under torchvision's file names, for tests of the whole pipeline.

The real ImageNet weights are not on the test machines (and tests must not download). LPIPS only
reads the ``features.*`` tensors of torchvision's VGG16 / AlexNet files, so random tensors of the
right shapes, written as ``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`` and
``alexnet-owt-7be5be79.pth``, make :func:`eg3d_invert.inversion.load_lpips` run its real
loading path. The numbers are then not perceptual, which no test here relies on.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch


def write_random_backbones(torch_home: Path, seed: int = 0) -> Path:
    """Write both weight files into ``torch_home/hub/checkpoints`` (once) and return ``torch_home``."""
    import torchvision

    ckpt = Path(torch_home) / "hub" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    # Only the convolutional part is built (and saved): VGG16's classifier alone holds 120M
    # parameters and would make the file ten times larger for nothing LPIPS reads.
    builders = {
        "vgg16-397923af.pth": lambda: torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]),
        "alexnet-owt-7be5be79.pth": lambda: torchvision.models.alexnet(weights=None).features,
    }
    for name, build in builders.items():
        path = ckpt / name
        if not path.is_file():
            features = build()
            torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return Path(torch_home)


@contextlib.contextmanager
def random_lpips_environment(torch_home: Path):
    """``TORCH_HOME`` pointing at random backbones and one torch thread, restored on exit.

    One thread is faster than two for these small models on busy shared cores.
    """
    home = write_random_backbones(torch_home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield home
        finally:
            torch.set_num_threads(threads)
