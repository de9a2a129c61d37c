"""Building blocks of the generator, checked against straightforward reference formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from eg3d_invert.generator import ops, rendering
from eg3d_invert.generator.planes import PLANE_AXES, sample_triplane_features


def _naive_upfirdn_up2(x, f, pad0, pad1, gain):
    """Zero-stuff by 2, pad, convolve with the flipped filter: the official reference path."""
    n, c, h, w = x.shape
    y = torch.zeros(n, c, h * 2, w * 2, dtype=x.dtype)
    y[:, :, ::2, ::2] = x
    y = F.pad(y, [pad0, pad1, pad0, pad1])
    k = (f.flip([0, 1]) * gain)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(y, k, groups=c)


def test_upsample2d_equals_zero_stuffing_then_filtering():
    f = ops.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 5, 7, 7, dtype=torch.float64)
    expected = _naive_upfirdn_up2(x, f.double(), 2, 1, 4.0)
    torch.testing.assert_close(ops.upsample2d(x, f.double()), expected)


def test_upsampling_modulated_conv_equals_reference_definition():
    torch.manual_seed(0)
    f = ops.setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    w = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    s = torch.rand(1, 4, dtype=torch.float64) + 0.5
    mw = w * s[0, None, :, None, None]
    mw = mw / (mw.square().sum([1, 2, 3], keepdim=True) + 1e-8).sqrt()
    # Official: transposed conv (stride 2, no flip) then the FIR filter with padding 1 and gain 4.
    expected = _naive_fir(F.conv_transpose2d(x, mw.transpose(0, 1), stride=2), f, 1, 4.0)
    got = ops.modulated_conv2d(x, w, s, up=2, padding=1, resample_filter=f)
    assert got.shape == (1, 3, 12, 12)
    torch.testing.assert_close(got, expected)


def _naive_fir(x, f, pad, gain):
    c = x.shape[1]
    return F.conv2d(F.pad(x, [pad] * 4), (f.flip([0, 1]) * gain)[None, None].repeat(c, 1, 1, 1), groups=c)


@pytest.mark.parametrize("up", [1, 2])
def test_fused_and_unfused_modulation_agree(up):
    torch.manual_seed(1)
    f = ops.setup_filter()
    x = torch.randn(3, 8, 8, 8)
    w = torch.randn(6, 8, 3, 3)
    s = torch.randn(3, 8)
    a = ops.modulated_conv2d(x, w, s, up=up, padding=1, resample_filter=f, fused=True)
    b = ops.modulated_conv2d(x, w, s, up=up, padding=1, resample_filter=f, fused=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # A batch equals its samples one by one.
    one = ops.modulated_conv2d(x[1:2], w, s[1:2], up=up, padding=1, resample_filter=f)
    torch.testing.assert_close(a[1:2], one, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act,clamp", [("lrelu", None), ("lrelu", 0.7), ("linear", 0.5), ("relu", None)])
def test_bias_act_forward_and_gradient(act, clamp):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    gain = ops.ACTIVATION_GAIN[act]

    def reference(x, b):
        y = x + b.reshape(1, -1, 1, 1)
        y = {"lrelu": lambda t: F.leaky_relu(t, 0.2), "relu": F.relu, "linear": lambda t: t}[act](y) * gain
        return y.clamp(-clamp, clamp) if clamp is not None else y

    torch.testing.assert_close(ops.bias_act(x, b, act=act, clamp=clamp), reference(x, b))
    assert torch.autograd.gradcheck(lambda x, b: ops.bias_act(x, b, act=act, clamp=clamp), (x, b))


def test_bias_act_in_place_does_not_touch_callers_tensor_unless_asked():
    x = torch.randn(1, 2, 3, 3)
    keep = x.clone()
    ops.bias_act(x, torch.ones(2), act="lrelu")
    torch.testing.assert_close(x, keep)


def test_normalize_2nd_moment():
    x = torch.randn(4, 16) * 3
    y = ops.normalize_2nd_moment(x)
    torch.testing.assert_close(y.square().mean(1), torch.ones(4), rtol=1e-4, atol=1e-4)


# --- rendering conventions ---------------------------------------------------------------------------


def test_convention_pixel_centres_and_row_major_rays():
    """Ray i*R+j goes through pixel (row i, column j) centre; a frontal camera looks down -z."""
    from eg3d_invert.camera import Camera
    cam = Camera.from_angles(0.0, 0.0, focal=2.0, lookat=(0, 0, 0))
    origins, dirs = rendering.generate_rays(cam.cam2world, cam.intrinsics, 4)
    assert origins.shape == dirs.shape == (1, 16, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(1, 16))
    # Column j -> image x; in world terms the frontal camera's image-right is world +x.
    assert dirs[0, 0, 0] < 0 < dirs[0, 3, 0]      # row 0: left to right
    assert dirs[0, 0, 1] > 0 > dirs[0, 12, 1]     # top row looks up (+y), bottom row down
    # Pixel centre (j + 0.5)/R: the ray through (0, 0) has slope (0.125 - 0.5)/f.
    expected_x = (0.5 / 4 - 0.5) / 2.0
    torch.testing.assert_close(dirs[0, 0, 0] / -dirs[0, 0, 2], torch.tensor(expected_x))


def test_convention_tri_plane_axes_keep_the_official_quirk():
    """Plane 2 is sampled with (z, x), not (y, z): the released checkpoints were trained that way."""
    planes = torch.zeros(1, 3, 1, 8, 8)
    planes[0, 2, 0] = torch.arange(8.0)[None, :].expand(8, 8)  # plane 2 varies along its width axis
    pts = torch.tensor([[[0.0, 0.0, -0.4375], [0.0, 0.0, 0.4375], [0.0, 0.4375, 0.0]]])
    f = sample_triplane_features(planes, pts, box_warp=1.0)[0, :, 0] * 3  # undo the mean over planes
    # Width coordinate of plane 2 is z: z=-0.4375 is column 0, z=+0.4375 is column 7; y does not matter.
    torch.testing.assert_close(f, torch.tensor([0.0, 7.0, 3.5]))
    assert torch.equal(PLANE_AXES[2], torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]))


def test_points_outside_the_box_get_zero_features():
    planes = torch.ones(1, 3, 4, 8, 8)
    f = sample_triplane_features(planes, torch.tensor([[[0.0, 0.0, 0.0], [0.9, 0.9, 0.9]]]), box_warp=1.0)
    torch.testing.assert_close(f[0, 0], torch.ones(4))
    torch.testing.assert_close(f[0, 1], torch.zeros(4))


def _grid_sample_reference(planes, points, box_warp):
    """The official lookup: inverse plane axes, grid_sample per plane, mean over planes."""
    n = planes.shape[0]
    coords = (2 / box_warp) * points
    inv = torch.linalg.inv(PLANE_AXES.to(points.dtype))
    proj = torch.einsum("bpi,kij->bkpj", coords, inv)[..., :2]
    feats = [F.grid_sample(planes[:, k], proj[:, k].unsqueeze(1), mode="bilinear", padding_mode="zeros",
                           align_corners=False)[:, :, 0] for k in range(3)]
    return torch.stack(feats, 1).mean(1).transpose(1, 2)


def test_feature_lookup_equals_official_grid_sample_with_gradients():
    torch.manual_seed(5)
    planes = torch.randn(2, 3, 5, 16, 16, dtype=torch.float64, requires_grad=True)
    # Inside, on the edges, just outside and far outside the box.
    pts = torch.cat([torch.rand(2, 200, 3, dtype=torch.float64) - 0.5,
                     (torch.rand(2, 50, 3, dtype=torch.float64) - 0.5) * 1.2,
                     torch.tensor([[[0.5, 0.5, 0.5], [-0.5, 0.5, -0.5], [3.0, -7.0, 0.1]]] * 2, dtype=torch.float64)],
                    1).requires_grad_()
    ours = sample_triplane_features(planes, pts, 1.0)
    ref = _grid_sample_reference(planes, pts, 1.0)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ours)
    ga = torch.autograd.grad(ours, (planes, pts), g)
    gb = torch.autograd.grad(ref, (planes, pts), g)
    torch.testing.assert_close(ga[0], gb[0])
    torch.testing.assert_close(ga[1], gb[1])
    # Shared planes (batch 1) serve every batch entry of points.
    torch.testing.assert_close(sample_triplane_features(planes[:1], pts, 1.0)[1],
                               _grid_sample_reference(planes[:1], pts[1:], 1.0)[0])


def test_deterministic_depths_are_official_linspace():
    o = torch.zeros(1, 3, 3)
    d = torch.tensor([[[0.0, 0.0, 1.0]] * 3])
    t = rendering.stratified_depths(o, d, 2.25, 3.3, 48, deterministic=True)
    assert torch.equal(t[0, 1], torch.linspace(2.25, 3.3, 48))
    jittered = rendering.stratified_depths(o, d, 2.25, 3.3, 48, generator=torch.Generator().manual_seed(0))
    step = (3.3 - 2.25) / 47
    assert ((jittered - t) >= 0).all() and ((jittered - t) < step + 1e-6).all()


def test_importance_samples_follow_the_weights_and_never_pick_the_last_bin():
    depths = torch.linspace(2.0, 3.0, 11).expand(1, 1, 11).contiguous()
    w = torch.zeros(1, 1, 10)
    w[..., 4] = 1.0
    fine = rendering.importance_depths(depths, w, 64, deterministic=True)
    mid = 0.5 * (depths[..., :-1] + depths[..., 1:])
    inside = ((fine >= mid[..., 3]) & (fine <= mid[..., 5])).float().mean()
    assert inside > 0.6  # the rest is the 0.01 floor the official smoothing adds
    assert fine.max() <= mid[..., -2] + 1e-6  # bins[D-3] is the largest reachable value


def test_compositing_matches_the_midpoint_formula():
    torch.manual_seed(3)
    sigma = torch.randn(2, 5, 9) * 3
    depths = torch.sort(torch.rand(2, 5, 9) + 2, dim=-1).values
    colors = torch.rand(2, 4, 5, 9)
    w = rendering.interval_weights(sigma, depths)
    # Reference: MipRayMarcher2 on interval midpoints.
    c_mid = (colors[..., :-1] + colors[..., 1:]) / 2
    s_mid = (sigma[..., :-1] + sigma[..., 1:]) / 2
    alpha = 1 - torch.exp(-F.softplus(s_mid - 1) * (depths[..., 1:] - depths[..., :-1]))
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha + 1e-10], -1), -1)[..., :-1]
    w_ref = alpha * trans
    torch.testing.assert_close(w, w_ref)
    rgb = (colors * rendering.sample_coefficients(w)[:, None]).sum(-1)
    torch.testing.assert_close(rgb, (c_mid * w_ref[:, None]).sum(-1))


def test_ray_box_limits():
    o = torch.tensor([[0.0, 0.0, 2.0], [0.0, 3.0, 2.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    t0, t1 = rendering.ray_box_limits(o, d, 1.0)
    torch.testing.assert_close(t0[0], torch.tensor([1.5]))
    torch.testing.assert_close(t1[0], torch.tensor([2.5]))
    assert t0[1] == -1 and t1[1] == -2  # a miss, flagged like the official code


def test_float64_gradients_through_rendering():
    """Gradients of a render w.r.t. the planes match finite differences (float64)."""
    torch.manual_seed(4)
    planes = (torch.randn(1, 3, 2, 4, 4, dtype=torch.float64) * 0.5).requires_grad_()
    pts = (torch.rand(1, 6, 3, dtype=torch.float64) - 0.5)
    assert torch.autograd.gradcheck(lambda p: sample_triplane_features(p, pts, 1.0), (planes,))
    sigma = torch.randn(1, 2, 5, dtype=torch.float64, requires_grad=True)
    depths = torch.linspace(2, 3, 5, dtype=torch.float64).expand(1, 2, 5)
    assert torch.autograd.gradcheck(lambda s: rendering.interval_weights(s, depths), (sigma,))
    assert math.isfinite(float(rendering.composite_depth(rendering.interval_weights(sigma, depths), depths).sum().detach()))


def test_gpu_lookup_path_agrees_with_the_cpu_one():
    """Off the CPU the official grid_sample lookup is used; both must give the same features."""
    from eg3d_invert.generator.planes import _sample_with_grid_sample
    torch.manual_seed(6)
    planes = torch.randn(1, 3, 4, 16, 16)
    pts = (torch.rand(3, 300, 3) - 0.5) * 1.1
    torch.testing.assert_close(_sample_with_grid_sample(planes, pts, 1.0), sample_triplane_features(planes, pts, 1.0))


def test_plane_lookup_gradient_matches_grid_sample_across_reused_buffers():
    """The CPU lookup's backward reuses one accumulator per thread: consecutive backwards (other
    planes, other points, another size) each give grid_sample's gradient, and releasing it is safe."""
    from eg3d_invert.generator.planes import _sample_with_grid_sample, release_scratch, sample_triplane_features

    gen = torch.Generator().manual_seed(3)
    for size, n in ((16, 500), (16, 300), (8, 200)):
        planes = torch.randn(1, 3, 4, size, size, generator=gen, requires_grad=True)
        points = (torch.rand(1, n, 3, generator=gen) - 0.5) * 1.1  # some outside the box
        weights = torch.randn(1, n, 4, generator=gen)
        (sample_triplane_features(planes, points, 1.0) * weights).sum().backward()
        ours = planes.grad.clone()
        planes.grad = None
        (_sample_with_grid_sample(planes, points, 1.0) * weights).sum().backward()
        torch.testing.assert_close(ours, planes.grad, rtol=1e-5, atol=1e-5)
    release_scratch()
    release_scratch()  # twice is harmless
