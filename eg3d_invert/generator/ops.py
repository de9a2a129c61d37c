"""Pure-PyTorch versions of the StyleGAN2 operations EG3D uses.

The official code routes these through custom CUDA kernels and, when those are unavailable
(any CPU or MPS run), through slow reference paths (zero-stuffing upsamplers, four separate
passes for bias + activation + gain + clamp). Here every operation is one or two native
PyTorch calls with the same mathematics, so results agree with the official outputs to float32
rounding while running faster and keeping fewer tensors alive for backward.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: Default gain of each activation (the official ``activation_funcs[...].def_gain``).
ACTIVATION_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0), "relu": math.sqrt(2.0)}
LRELU_SLOPE = 0.2


def setup_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """Normalised 2-D FIR filter ``(k, k)`` from 1-D taps (outer product, sum 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit root-mean-square along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# --- bias + activation + gain + clamp, in one pass ---------------------------------------------


class _BiasActFunction(torch.autograd.Function):
    """``clamp(act(x + b) * gain, -clamp, clamp)`` computed in place, saving only the output.

    For ``linear`` and ``lrelu`` the output alone determines the derivative (the sign of the
    output is the sign of the input, and saturated outputs sit exactly on the clamp), so
    nothing else is kept for backward: this is what the official CUDA kernel does too.
    """

    @staticmethod
    def forward(ctx, x, b, act, gain, clamp):
        if b is not None:
            x.add_(b.reshape(1, -1, *([1] * (x.ndim - 2))))
        if act == "lrelu":
            F.leaky_relu_(x, LRELU_SLOPE)
        elif act == "relu":
            F.relu_(x)
        if gain != 1:
            x.mul_(gain)
        if clamp is not None:
            x.clamp_(-clamp, clamp)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.act, ctx.gain, ctx.clamp, ctx.has_bias = act, gain, clamp, b is not None
        return x

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        g = grad
        if ctx.clamp is not None:
            # Saturated outputs sit exactly on +-clamp; everything strictly inside passes.
            g = torch.ops.aten.hardtanh_backward(g, y, -ctx.clamp, ctx.clamp)
        if ctx.act == "lrelu":  # the output's sign is the input's: one fused kernel from y
            g = torch.ops.aten.leaky_relu_backward(g, y, LRELU_SLOPE, True)
        elif ctx.act == "relu":
            g = torch.ops.aten.threshold_backward(g, y, 0.0)
        if ctx.gain != 1:
            g = g * ctx.gain
        gb = g.sum(dim=[d for d in range(g.ndim) if d != 1]) if ctx.has_bias else None
        return g, gb, None, None, None


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", gain: float | None = None,
             clamp: float | None = None, inplace: bool = False) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply ``act``, multiply by ``gain``, clamp to ``+-clamp``.

    ``gain`` defaults to the activation's standard gain. With ``inplace=True`` the caller hands
    over ``x`` (a temporary it owns) and it is overwritten, also under autograd.
    """
    if act not in ACTIVATION_GAIN:
        raise ValueError(f"unsupported activation {act!r}")
    gain = ACTIVATION_GAIN[act] if gain is None else float(gain)
    if act == "linear" and gain == 1 and clamp is None:
        return x + b.reshape(1, -1, *([1] * (x.ndim - 2))) if b is not None else x
    if not inplace:
        x = x.clone()
    if b is not None:
        b = b.to(x.dtype)
    return _BiasActFunction.apply(x, b, act, gain, None if clamp is None else float(clamp))


# --- resampling ---------------------------------------------------------------------------------


def _depthwise(f: torch.Tensor, channels: int, dtype) -> torch.Tensor:
    return f.to(dtype)[None, None].expand(channels, 1, *f.shape)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling with FIR filter ``f`` (gain 4): the official ``upfirdn2d.upsample2d``.

    Zero-stuffing then filtering equals a stride-2 transposed depthwise convolution, which
    skips the multiplications by the inserted zeros.
    """
    c, taps = x.shape[1], f.shape[-1]
    # upfirdn2d pads (taps+1)//2 before the zero-stuffed signal; in transposed-conv terms that
    # is a padding of taps-1-(taps+1)//2 (1 for 4 taps), and the filter is used unflipped.
    return F.conv_transpose2d(x, _depthwise(f * 4, c, x.dtype), stride=2, padding=taps - 1 - (taps + 1) // 2, groups=c)


def blur(x: torch.Tensor, f: torch.Tensor, pad0: int, pad1: int, gain: float = 1.0) -> torch.Tensor:
    """FIR filtering with zero padding ``pad0`` before and ``pad1`` after (both axes).

    A true convolution, like the official ``upfirdn2d`` (which flips the filter before
    correlating); with EG3D's symmetric [1,3,3,1] filter the flip changes nothing.
    """
    c = x.shape[1]
    weight = _depthwise(f.flip([0, 1]) * gain, c, x.dtype)
    if pad0 == pad1:
        return F.conv2d(x, weight, padding=pad0, groups=c)
    return F.conv2d(F.pad(x, [pad0, pad1, pad0, pad1]), weight, groups=c)


# --- modulated convolution ----------------------------------------------------------------------


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     fused: bool | None = None, scale: float = 1.0, bias: torch.Tensor | None = None) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    Args:
        x: ``(N, I, H, W)`` activations.
        weight: ``(O, I, k, k)`` base weights.
        styles: ``(N, I)`` per-sample input-channel scales.
        demodulate: normalise each output channel's modulated weights to unit L2 norm.
        up: 1, or 2 for a transposed stride-2 convolution followed by the FIR filter.
        fused: modulate the weights (one grouped convolution) rather than the activations.
            ``None`` picks: fused for a single sample, where modulating the ``O*I*k*k`` weights
            is far cheaper than scaling ``I*H*W`` activations; unfused for batches, where one
            dense convolution beats a grouped one on CPUs, and when only the styles need
            gradients.
        scale: output multiplier folded into the (de)modulation coefficients, so a following
            activation gain costs no extra pass over the activations.
        bias: ``(O,)`` added to the output inside the convolution (``up=1`` only; after an
            upsampling convolution the FIR filter comes last).
    Returns:
        ``scale * conv + bias``, ``(N, O, H*up, W*up)``; equal to both official paths up to
        float32 rounding.
    """
    n, in_ch, h, w_ = x.shape
    out_ch, in_w, kh, kw = weight.shape
    if in_w != in_ch or styles.shape != (n, in_ch):
        raise ValueError(f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"styles {tuple(styles.shape)} do not agree")
    if x.dtype == torch.float16 and demodulate:
        # Same pre-normalisation as the official code: keeps fp16 from overflowing.
        weight = weight * (1 / np.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    if bias is not None and up != 1:
        raise ValueError("bias can only be folded into non-upsampling convolutions")
    if fused is None:
        # Gradients for the styles only (projection: frozen weights) come cheaper unfused: the
        # styles' gradient then needs no weight-gradient convolution, only the data gradient.
        styles_only = torch.is_grad_enabled() and styles.requires_grad and not weight.requires_grad
        fused = n == 1 and not styles_only
    dcoefs = None
    if demodulate or fused:
        wts = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)
        if demodulate:
            dcoefs = (wts.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if scale != 1:
        dcoefs = dcoefs * scale if dcoefs is not None else torch.full((n, out_ch), float(scale), device=x.device)
    if fused:
        if dcoefs is not None:
            wts = wts * dcoefs.reshape(n, out_ch, 1, 1, 1)
        b = bias.to(x.dtype).repeat(n) if bias is not None else None
        # For one sample no reshape: it would rewrite the batch stride of a channels-last tensor
        # and make oneDNN fall back to slow layout conversions.
        xg = x if n == 1 else x.reshape(1, n * in_ch, h, w_)
        y = _conv(xg, wts.to(x.dtype).reshape(n * out_ch, in_ch, kh, kw), n, up, padding, resample_filter, b)
        return y if n == 1 else y.reshape(n, out_ch, *y.shape[2:])
    y = _conv(x * styles.to(x.dtype).reshape(n, in_ch, 1, 1), weight.to(x.dtype), 1, up, padding, resample_filter)
    if dcoefs is not None:
        d = dcoefs.to(y.dtype).reshape(n, out_ch, 1, 1)
        return torch.addcmul(bias.to(y.dtype).reshape(1, -1, 1, 1), y, d) if bias is not None else y * d
    return y + bias.to(y.dtype).reshape(1, -1, 1, 1) if bias is not None else y


def _conv(x: torch.Tensor, w: torch.Tensor, groups: int, up: int, padding: int,
          resample_filter: torch.Tensor | None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Grouped convolution ``w (G*O, I, k, k)``, or for ``up=2`` the official upsampling one."""
    if up == 1:
        if groups == 1 and padding == 0 and w.shape[2:] == (1, 1) and x.shape[0] == 1 and x.is_contiguous():
            # A 1x1 convolution of one NCHW sample is one matrix product (O, I) @ (I, H*W); BLAS
            # runs it and its backward about twice as fast as oneDNN does for ToRGB's few outputs.
            o, i, h, w_ = w.shape[0], x.shape[1], x.shape[2], x.shape[3]
            x2 = x.reshape(i, h * w_)
            y = torch.addmm(bias[:, None], w.reshape(o, i), x2) if bias is not None else w.reshape(o, i).mm(x2)
            return y.reshape(1, o, h, w_)
        return F.conv2d(x, w, bias=bias, padding=padding, groups=groups)
    if up != 2:
        raise ValueError(f"up must be 1 or 2, got {up}")
    go, in_ch, kh, kw = w.shape
    out_ch = go // groups
    # Transposed conv wants (in, out) weights per group; the official path does not flip them.
    wt = w.reshape(groups, out_ch, in_ch, kh, kw).transpose(1, 2).reshape(groups * in_ch, out_ch, kh, kw)
    taps = resample_filter.shape[-1]
    pad0 = padding + (taps + 1) // 2 - (kw - 1)
    pad1 = padding + (taps - 2) // 2 - (kw - 2)
    if pad0 < 0 or pad1 < 0:
        raise ValueError("unsupported padding for an upsampling convolution")
    y = F.conv_transpose2d(x, wt, stride=2, groups=groups)
    return blur(y, resample_filter, pad0, pad1, gain=4.0)
