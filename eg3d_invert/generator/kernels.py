"""Hand-written autograd Functions for the two hot spots of rendering with gradients.

Each computes exactly what its plain PyTorch expression computes (and builds no graph when no
gradient is needed); the backward is written out to keep fewer tensors alive and to avoid
kernels that CPUs run slowly (per-slice zero fills, batched matrix products with an inner size
of one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class DecoderMLP(torch.autograd.Function):
    """The decoder's two layers, ``softplus(f W1^T + b1) W2^T + b2`` -> (raw sigma, sigmoid colours).

    The backward keeps only the hidden activations (the softplus derivative ``sigmoid(x)`` equals
    ``-expm1(-softplus(x))``), the colours, and the features when the first layer's weights need
    a gradient. It assembles the output gradient in one ``(P, 33)`` buffer rather than
    zero-filling it once per slice (density and colours).
    """

    @staticmethod
    def forward(ctx, features, w1, b1, w2, b2):
        h = F.softplus(torch.addmm(b1, features, w1.t()))
        out = torch.addmm(b2, h, w2.t())
        rgb = torch.sigmoid(out[:, 1:])
        sigma = out[:, 0].contiguous()
        # The features are only needed for the first layer's weight gradient.
        ctx.save_for_backward(features if ctx.needs_input_grad[1] else None, w1, w2, h, rgb)
        return sigma, rgb

    @staticmethod
    def backward(ctx, g_sigma, g_rgb):
        features, w1, w2, h, rgb = ctx.saved_tensors
        need = ctx.needs_input_grad
        g_out = h.new_empty(h.shape[0], w2.shape[0])
        if g_sigma is None:
            g_out[:, 0].zero_()
        else:
            g_out[:, 0].copy_(g_sigma)
        if g_rgb is None:
            g_out[:, 1:].zero_()
        else:
            torch.ops.aten.sigmoid_backward.grad_input(g_rgb, rgb, grad_input=g_out[:, 1:])
        g_f = g_w1 = g_b1 = g_w2 = g_b2 = None
        if need[3]:
            g_w2 = g_out.t().mm(h)
        if need[4]:
            g_b2 = g_out.sum(0)
        if need[0] or need[1] or need[2]:
            # softplus'(x) = sigmoid(x) = -expm1(-h): g_x holds the negated gradient, and the
            # sign goes onto the (smaller) results.
            g_x = g_out.mm(w2)
            # In row blocks through one small buffer: a fresh (P, 64) temporary costs more in page
            # faults than the arithmetic.
            step = 1 << 15
            buf = h.new_empty(min(step, h.shape[0]), h.shape[1])
            for s in range(0, h.shape[0], step):
                d = torch.neg(h[s:s + step], out=buf[:min(step, h.shape[0] - s)])
                g_x[s:s + step].mul_(d.expm1_())
            del buf
            if need[0]:
                g_f = g_x.mm(w1).neg_()
            if need[1]:
                g_w1 = g_x.t().mm(features).neg_()
            if need[2]:
                g_b1 = g_x.sum(0).neg_()
        return g_f, g_w1, g_b1, g_w2, g_b2


def weighted_sum(coef: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """``sum_s coef[b, r, s] * colors[b, r, s, :]`` as one batched matrix product: ``(B, R, C)``."""
    b, r, s, c = colors.shape
    return WeightedSum.apply(coef.reshape(b * r, s), colors.reshape(b * r, s, c)).reshape(b, r, c)


class WeightedSum(torch.autograd.Function):
    """``out[n] = coef[n] @ colors[n]``; the colours' gradient (an outer product per ray) is one
    broadcast multiplication instead of a batched matrix product with an inner size of one,
    which CPUs run ray by ray."""

    @staticmethod
    def forward(ctx, coef, colors):
        ctx.save_for_backward(coef, colors)
        return torch.bmm(coef.unsqueeze(1), colors).squeeze(1)

    @staticmethod
    def backward(ctx, grad):
        coef, colors = ctx.saved_tensors
        g_coef = g_colors = None
        if ctx.needs_input_grad[0]:
            g_coef = torch.bmm(colors, grad.unsqueeze(-1)).squeeze(-1)
        if ctx.needs_input_grad[1]:
            g_colors = coef.unsqueeze(-1) * grad.unsqueeze(1)
        return g_coef, g_colors


__all__ = ["DecoderMLP", "WeightedSum", "weighted_sum"]
