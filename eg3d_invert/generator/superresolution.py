"""EG3D's super-resolution modules: the raw neural rendering (32 feature channels) to the image.

Each released checkpoint names its module by the official class path. They differ only in
their two synthesis blocks and the input size they expect:

=================================  ===========  ==========================================  ======
official class                     input size   blocks (channels, resolution, upsampling)   output
=================================  ===========  ==========================================  ======
``SuperresolutionHybrid2X``        64 (``!=``)  32->128 @64 no-up, 128->64 @128             128
``SuperresolutionHybrid4X``        128 (``<``)  32->128 @128 no-up, 128->64 @256            256
``SuperresolutionHybrid8X``        128 (``!=``) 32->128 @256, 128->64 @512                  512
``SuperresolutionHybrid8XDC``      128 (``!=``) 32->256 @256, 256->128 @512                 512
=================================  ===========  ==========================================  ======

The input is resized (bilinear, antialiased) when its size differs from the expected one;
4X only resizes inputs that are *smaller*, as in the official code. Only the last w is used,
for all three style inputs. The SR layers use ``w_dim=512`` whatever the generator's w_dim, and
clamp their convolutions at 256 when the checkpoint asks for fp16 SR (``sr_num_fp16_res > 0``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import SynthesisBlock

_SR_W_DIM = 512  # hard-coded in the official modules


class _HybridSuperresolution(nn.Module):
    #: (output resolution, input resolution, resize only if smaller, block0 (out ch, res, up), block1 (out ch, res))
    spec: tuple
    has_filter_buffer = True

    def __init__(self, channels: int, img_resolution: int, sr_num_fp16_res: int, sr_antialias: bool,
                 num_fp16_res: int = 4, conv_clamp=None, channel_base=None, channel_max=None, **block_kwargs):
        super().__init__()
        out_res, self.input_resolution, self._resize_if_smaller, (c0, r0, up0), (c1, r1) = self.spec
        if img_resolution != out_res:
            raise ValueError(f"{type(self).__name__} produces {out_res}x{out_res} images, "
                             f"but the checkpoint asks for img_resolution={img_resolution}")
        use_fp16 = sr_num_fp16_res > 0
        clamp = 256 if use_fp16 else None
        self.sr_antialias = sr_antialias
        self.block0 = SynthesisBlock(channels, c0, w_dim=_SR_W_DIM, resolution=r0, img_channels=3, is_last=False,
                                     use_fp16=use_fp16, conv_clamp=clamp, up=up0, **block_kwargs)
        self.block1 = SynthesisBlock(c0, c1, w_dim=_SR_W_DIM, resolution=r1, img_channels=3, is_last=True,
                                     use_fp16=use_fp16, conv_clamp=clamp, up=2, **block_kwargs)
        if self.has_filter_buffer:
            # Unused by the forward pass; registered because the official module has it.
            from .ops import setup_filter
            self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))

    def _resize(self, t: torch.Tensor) -> torch.Tensor:
        size = t.shape[-1]
        needed = size < self.input_resolution if self._resize_if_smaller else size != self.input_resolution
        if not needed:
            return t
        return F.interpolate(t, size=(self.input_resolution, self.input_resolution), mode="bilinear",
                             align_corners=False, antialias=self.sr_antialias)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, return_aliased_raw: bool = False,
                **block_kwargs):
        """``rgb (N,3,r,r)``, features ``x (N,32,r,r)``, ``ws (N,*,512)`` -> image ``(N,3,R,R)``.

        Official quirk: when the input is not resized and the first block does not upsample
        (2X at 64, 4X at 128), the official block adds its ToRGB output *in place* into ``rgb``,
        which is a view of the raw render, so the official ``image_raw`` comes back altered (and
        backward through it fails). Here the addition happens on a copy; with
        ``return_aliased_raw=True`` the value the official code returns as ``image_raw`` is
        returned too (``None`` when no aliasing happens), so callers can reproduce it.
        """
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        resized = self._resize(rgb)
        aliased = resized is rgb and self.block0.up == 1
        x, rgb = self._resize(x), resized.clone() if resized is rgb else resized
        x, rgb = self.block0(x, rgb, ws, **block_kwargs)
        raw_after_block0 = rgb.clone() if aliased and return_aliased_raw else None
        x, rgb = self.block1(x, rgb, ws, **block_kwargs)
        rgb = rgb.contiguous()
        return (rgb, raw_after_block0) if return_aliased_raw else rgb


class SuperresolutionHybrid2X(_HybridSuperresolution):
    spec = (128, 64, False, (128, 64, 1), (64, 128))


class SuperresolutionHybrid4X(_HybridSuperresolution):
    spec = (256, 128, True, (128, 128, 1), (64, 256))


class SuperresolutionHybrid8X(_HybridSuperresolution):
    spec = (512, 128, False, (128, 256, 2), (64, 512))


class SuperresolutionHybrid8XDC(_HybridSuperresolution):
    spec = (512, 128, False, (256, 256, 2), (128, 512))
    has_filter_buffer = False


#: Official class paths (as stored in ``rendering_kwargs['superresolution_module']``) -> classes.
SUPERRESOLUTION_MODULES = {
    f"training.superresolution.{cls.__name__}": cls
    for cls in (SuperresolutionHybrid2X, SuperresolutionHybrid4X, SuperresolutionHybrid8X, SuperresolutionHybrid8XDC)
}


def superresolution_class(name: str) -> type[_HybridSuperresolution]:
    """The class for an official module path (or bare class name)."""
    if name in SUPERRESOLUTION_MODULES:
        return SUPERRESOLUTION_MODULES[name]
    for path, cls in SUPERRESOLUTION_MODULES.items():
        if path.rsplit(".", 1)[-1] == name:
            return cls
    from ..errors import ConfigError
    raise ConfigError(f"unknown superresolution module {name!r}; known: "
                      + ", ".join(p.rsplit('.', 1)[-1] for p in SUPERRESOLUTION_MODULES))
