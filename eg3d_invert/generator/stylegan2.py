"""The StyleGAN2 networks inside EG3D: mapping network, synthesis layers and blocks, backbone.

One class per paper concept, with the official attribute names (``affine``, ``noise_const``,
``noise_strength``, ``resample_filter``, ``torgb``, ``b{res}``, ``fc{i}``, ``embed``, ``w_avg``),
so the parameters of the released checkpoints load by name. Only what EG3D generators use is
implemented: the 'skip' architecture and modulated convolutions executed the fused way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from . import ops


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalised learning rate: weights are stored divided by ``lr_multiplier``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def effective_weight(self, dtype=torch.float32) -> torch.Tensor:
        return self.weight.to(dtype) * self.weight_gain

    def effective_bias(self, dtype=torch.float32) -> torch.Tensor | None:
        if self.bias is None:
            return None
        b = self.bias.to(dtype)
        return b * self.bias_gain if self.bias_gain != 1 else b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight(x.dtype)
        b = self.effective_bias(x.dtype)
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation, inplace=True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class MappingNetwork(nn.Module):
    """z (and the camera label c) to the intermediate latent w, broadcast to ``num_ws`` copies."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None,
                 activation: str = "lrelu", lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if embed_features is None else embed_features
        embed_features = 0 if c_dim == 0 else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                                          lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1, truncation_cutoff: int | None = None,
                update_emas: bool = False) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            _check_shape(z, (None, self.z_dim), "z")
            parts.append(ops.normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            _check_shape(c, (None, self.c_dim), "c")
            parts.append(ops.normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = torch.cat([self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi), x[:, truncation_cutoff:]], 1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


def _check_shape(t: torch.Tensor, shape: tuple, name: str) -> None:
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        expected = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {expected}, got {list(t.shape)}")


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution + noise + bias + leaky ReLU, optionally upsampling 2x."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ops.ACTIVATION_GAIN[activation]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", gain: float = 1,
                generator: torch.Generator | None = None) -> torch.Tensor:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        styles = self.affine(w)
        # The activation gain is folded into the convolution (lrelu(g*z) = g*lrelu(z) for g > 0),
        # and so is the bias where no filter follows: one pass over the output is saved for each.
        g = self.act_gain * gain
        fold_bias = self.up == 1
        bias = self.bias.to(x.dtype) * g
        x = ops.modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding,
                                 resample_filter=self.resample_filter, scale=g, bias=bias if fold_bias else None)
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device,
                                generator=generator).to(x.dtype)
            x = x.add_(noise * (self.noise_strength * g).to(x.dtype))
        elif self.use_noise and noise_mode == "const":
            x = x.add_((self.noise_const * (self.noise_strength * g)).to(x.dtype))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, None if fold_bias else bias, act=self.activation, gain=1.0, clamp=clamp, inplace=True)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
                f"resolution={self.resolution}, up={self.up}, activation={self.activation}")


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution without demodulation, to image (or tri-plane) channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False, bias=self.bias)
        return ops.bias_act(x, None, clamp=self.conv_clamp, inplace=True)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}"


class SynthesisBlock(nn.Module):
    """Two synthesis layers plus a ToRGB whose output is added to the (upsampled) skip image.

    ``up=2`` is the official ``SynthesisBlock``; ``up=1`` is the super-resolution's
    ``SynthesisBlockNoUp`` (no upsampling of either the features or the skip image).
    ``in_channels=0`` makes the first block, which starts from a learned constant.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = "skip", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = 256, use_fp16: bool = False, fp16_channels_last: bool = False,
                 fused_modconv_default=True, up: int = 2, **layer_kwargs):
        super().__init__()
        if architecture != "skip":
            raise ValueError(f"only the 'skip' architecture is used by EG3D, got {architecture!r}")
        self.in_channels, self.w_dim, self.resolution = in_channels, w_dim, resolution
        self.img_channels, self.is_last, self.architecture = img_channels, is_last, architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.fused_modconv_default = fused_modconv_default
        self.up = up
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=up,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def compute_dtype(self, device: torch.device, force_fp32: bool = False) -> torch.dtype:
        """float16 only where the official code uses it: fp16 blocks on CUDA devices."""
        return torch.float16 if self.use_fp16 and device.type == "cuda" and not force_fp32 else torch.float32

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, force_fp32: bool = False,
                noise_mode: str = "random", generator: torch.Generator | None = None,
                **_ignored) -> tuple[torch.Tensor, torch.Tensor]:
        _check_shape(ws, (None, self.num_conv + self.num_torgb, self.w_dim), "block ws")
        dtype = self.compute_dtype(ws.device, force_fp32)
        w_iter = iter(ws.unbind(dim=1))
        kw = dict(noise_mode=noise_mode, generator=generator)
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(_preferred_layout(x), next(w_iter), **kw)
        else:
            in_res = self.resolution // self.up
            _check_shape(x, (None, self.in_channels, in_res, in_res), "block input")
            x = self.conv0(_preferred_layout(x.to(dtype)), next(w_iter), **kw)
            x = self.conv1(x, next(w_iter), **kw)
        if img is not None and self.up == 2:
            img = ops.upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter)).to(torch.float32)
        img = img.add_(y) if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, up={self.up}"


def _preferred_layout(x: torch.Tensor) -> torch.Tensor:
    """Channels-last activations for CPU inference, NCHW when gradients are recorded.

    oneDNN's forward convolutions run in channels-last, and NCHW tensors pay a conversion in and
    out of each (a third of the super-resolution's time). Its backward kernels are the other
    way round: about twice as slow in channels-last (measured on 128x512x512 convolutions).
    """
    if x.device.type == "cpu" and not torch.is_grad_enabled():
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


class SynthesisNetwork(nn.Module):
    """Blocks from 4x4 up to ``img_resolution``, summing their ToRGB outputs (skip architecture)."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, **block_kwargs):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=res == img_resolution,
                                   use_fp16=res >= fp16_resolution, **block_kwargs)
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, max_resolution: int | None = None, **block_kwargs) -> torch.Tensor:
        """``ws (N, num_ws, w_dim)`` -> the summed ToRGB image ``(N, img_channels, R, R)``.

        ``max_resolution`` (one of :attr:`block_resolutions`) stops after that block and returns
        the skip image so far. The later blocks only upsample it and add their own ToRGB
        outputs, so the part of the result that comes from the coarse blocks can be computed
        without running the expensive fine ones (see :meth:`upsample_skip`).
        """
        _check_shape(ws, (None, self.num_ws, self.w_dim), "ws")
        if max_resolution is not None and max_resolution not in self.block_resolutions:
            raise ValueError(f"max_resolution must be one of {self.block_resolutions}, got {max_resolution}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            if max_resolution is not None and res > max_resolution:
                break
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), **block_kwargs)
            w_idx += block.num_conv
        return img.contiguous()

    def upsample_skip(self, img: torch.Tensor, resolution: int) -> torch.Tensor:
        """Carry a skip image ``(N, C, r, r)`` up to ``resolution`` the way the later blocks carry it
        (each block's FIR 2x upsampling), without adding their ToRGB outputs.

        Upsampling is linear, so ``upsample_skip(forward(ws, max_resolution=r), R)`` is exactly
        the share of the blocks up to ``r`` in ``forward(ws)``.
        """
        for res in self.block_resolutions:
            if img.shape[-1] < res <= resolution:
                img = ops.upsample2d(img, getattr(self, f"b{res}").resample_filter)
        if img.shape[-1] != resolution:
            raise ValueError(f"cannot carry a {img.shape[-1]}-pixel skip image to {resolution} pixels")
        return img

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, num_fp16_res={self.num_fp16_res}")


class StyleGAN2Backbone(nn.Module):
    """The official ``networks_stylegan2.Generator``: mapping + synthesis (EG3D's tri-plane backbone)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)
