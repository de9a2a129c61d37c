"""Bilinear feature lookup in the three planes, as the official ``sample_from_planes`` does it.

The official renderer projects every point onto three planes and bilinearly samples each with
``grid_sample(padding_mode='zeros', align_corners=False)``, then averages the three features.
On CPUs the same numbers come from one ``embedding_bag`` over a channels-last copy of the
planes (:func:`plane_table`): 32 contiguous floats per bilinear corner instead of one strided
read per channel, and a backward that accumulates rows (:class:`BilinearLookup`). On GPUs the
official ``grid_sample`` is the fast path and is used as it is.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

#: The released checkpoints' plane axes (``generate_planes()``): planes XY, XZ and ZX. The third
#: was meant to be YZ; the released checkpoints were trained with this one, so it must stay.
PLANE_AXES = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                           [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                           [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)

# Plane k reads world coordinates (U[k], V[k]) as its (width, height): (x, y), (x, z), (z, x).
_U_AXES = torch.tensor([0, 0, 2])
_V_AXES = torch.tensor([1, 2, 0])


def plane_table(planes: torch.Tensor) -> torch.Tensor | None:
    """Planes ``(N, 3, C, H, W)`` as one row table ``(N*3*(H+3)*(W+3), C)`` with a zero border.

    One zero row/column before and two after each plane stand in for grid_sample's zero
    padding: every bilinear corner of any point then has a valid index, and corners outside
    the plane read zeros. None off the CPU, where :func:`sample_triplane_features` uses
    grid_sample directly.
    """
    if planes.device.type != "cpu":
        return None
    n, k, c, h, w = planes.shape
    padded = F.pad(planes.reshape(n * k, c, h, w), [1, 2, 1, 2])
    return padded.permute(0, 2, 3, 1).reshape(-1, c)


def sample_triplane_features(planes: torch.Tensor, points: torch.Tensor, box_warp: float,
                             table: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the three planes' bilinear features at ``points``: ``(N, P, C)``.

    Args:
        planes: ``(N, 3, C, H, W)``; ``N == 1`` planes are shared by every batch entry of points.
        points: ``(B, P, 3)`` world coordinates, ``B == N`` or ``N == 1``.
        box_warp: side of the tri-plane cube ``[-box_warp/2, box_warp/2]^3``; outside it the
            features are zero, exactly like the official ``grid_sample(padding_mode='zeros',
            align_corners=False)`` lookup.
        table: ``plane_table(planes)`` when the caller queries the same planes repeatedly
            (building it copies the planes once).

    Bilinear weights are differentiable in the points, so gradients also reach the camera.
    """
    n, k, c, h, w = planes.shape
    b, p, _ = points.shape
    if k != 3 or n not in (1, b):
        raise ValueError(f"planes {tuple(planes.shape)} do not fit points {tuple(points.shape)}")
    if planes.device.type != "cpu":
        return _sample_with_grid_sample(planes, points, box_warp)
    if table is None:
        table = plane_table(planes)
    g = points.to(planes.dtype).reshape(b * p, 3) * (2 / box_warp)
    u = g.index_select(1, _U_AXES.to(g.device))
    v = g.index_select(1, _V_AXES.to(g.device))
    # grid_sample's un-normalisation, then clamping that keeps far-away points on the zero border.
    ix = (((u + 1) * w - 1) / 2).clamp(-1, w)
    iy = (((v + 1) * h - 1) / 2).clamp(-1, h)
    x0, y0 = torch.floor(ix), torch.floor(iy)
    fx, fy = ix - x0, iy - y0
    row = w + 3
    plane_rows = (h + 3) * row
    base = (y0 * row + x0).long() + (torch.arange(3, device=g.device) * plane_rows + row + 1)
    if n > 1:
        base = base + (torch.arange(b, device=g.device) * (3 * plane_rows)).repeat_interleave(p)[:, None]
    corners = torch.tensor([0, 1, row, row + 1], device=g.device)
    index = (base.unsqueeze(-1) + corners).reshape(b * p, 12)
    gx = 1 - fx
    gy = (1 - fy) / 3  # the 1/3 of the mean over the planes rides on the weights
    fy = fy / 3
    weight = torch.stack((gx * gy, fx * gy, gx * fy, fx * fy), -1).reshape(b * p, 12)
    if table.requires_grad and torch.is_grad_enabled() and not weight.requires_grad:
        # Gradients for the planes only (PTI: the sample points carry no gradient).
        return BilinearLookup.apply(table, index, weight, row).reshape(b, p, c)
    return F.embedding_bag(index, table, per_sample_weights=weight, mode="sum").reshape(b, p, c)


class BilinearLookup(torch.autograd.Function):
    """``embedding_bag`` of 4-corner bilinear stencils whose backward skips the sort of all indices.

    The generic backward sorts the ``12 * P`` row indices and accumulates 32-float rows one
    by one. Here every (point, plane) adds its four corner contributions at once: the rows of
    a table four times as wide (one 32-float slot per corner) are indexed by the stencil's first
    corner, so ``3 * P`` unsorted 128-float rows are accumulated with ``index_add_``, and the
    four slots are then shifted onto their corners (offsets 0, 1, ``row``, ``row + 1``).
    Only the table gets a gradient; callers use plain ``embedding_bag`` when the stencil
    weights need one.
    """

    CHUNK = 1 << 14  # points per accumulation: the 3 * CHUNK * 128-float temporary stays in cache
    _scratch = threading.local()  # the 4-slot accumulator, reused (see _slots)

    @staticmethod
    def _slots(rows: int, c: int, like: torch.Tensor) -> torch.Tensor:
        """A zeroed ``(rows, 4, c)`` accumulator (~100 MB for EG3D's planes), reused across calls
        of this thread: a fresh one costs page faults on every backward (a third of a coarse
        projection step on a CPU); zeroing warm memory is a few milliseconds. Only the gradient
        handed back is a new tensor."""
        buf = getattr(BilinearLookup._scratch, "buf", None)
        if buf is None or buf.shape != (rows, 4, c) or buf.dtype != like.dtype or buf.device != like.device:
            buf = like.new_empty(rows, 4, c)
            BilinearLookup._scratch.buf = buf
        return buf.zero_()

    @staticmethod
    def forward(ctx, table, index, weight, row):
        ctx.save_for_backward(index, weight)
        ctx.rows, ctx.row = table.shape[0], row
        return F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")

    @staticmethod
    def backward(ctx, grad):
        index, weight = ctx.saved_tensors
        rows, row = ctx.rows, ctx.row
        n, c = grad.shape
        grad = grad.contiguous()
        first = index[:, 0::4].reshape(-1)  # each stencil's top-left corner, (P * 3,)
        slots = BilinearLookup._slots(rows, c, grad) if grad.device.type == "cpu" else grad.new_zeros(rows, 4, c)
        chunk = min(BilinearLookup.CHUNK, n)
        buf = grad.new_empty(chunk, 3, 4, c)
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            contrib = torch.mul(weight[s:s + m].reshape(m, 3, 4, 1), grad[s:s + m].reshape(m, 1, 1, c), out=buf[:m])
            slots.view(rows, 4 * c).index_add_(0, first[3 * s:3 * (s + m)], contrib.view(3 * m, 4 * c))
        out = slots[:, 0].clone()
        for k, off in ((1, 1), (2, row), (3, row + 1)):
            out[off:].add_(slots[:-off, k])
        return out, None, None, None


def release_scratch() -> None:
    """Free this thread's :class:`BilinearLookup` accumulator (optimisations call it when done,
    so an idle process does not hold ~100 MB)."""
    BilinearLookup._scratch.__dict__.pop("buf", None)


def _sample_with_grid_sample(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """The official lookup (one grid_sample per plane), used on GPUs where it is the fast path."""
    b = points.shape[0]
    if planes.shape[0] == 1 and b > 1:
        planes = planes.expand(b, -1, -1, -1, -1)
    coords = points.to(planes.dtype) * (2 / box_warp)
    out = None
    for k in range(3):
        grid = torch.stack((coords[..., int(_U_AXES[k])], coords[..., int(_V_AXES[k])]), -1).unsqueeze(1)
        f = F.grid_sample(planes[:, k], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, :, 0]
        out = f if out is None else out + f
    return (out / 3).transpose(1, 2)


__all__ = ["PLANE_AXES", "plane_table", "sample_triplane_features", "BilinearLookup", "release_scratch"]
