"""SeFa directions, their cache, edit parameters and arithmetic, and the coarse edited previews."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from eg3d_invert.errors import ConfigError
from eg3d_invert.pretrained import load_generator
from eg3d_invert.render import Scene
from eg3d_invert.viewer import editing
from eg3d_invert.viewer.editing import Edit, SefaDirections, apply_edit, cached_sefa_directions, sefa_directions
from eg3d_invert.viewer.frames import LiveSettings, coarse_edit_scene, coarse_skip

from ..conftest import require
from .conftest import TINY

KEY = "ab" * 32


@pytest.fixture(scope="module")
def G():
    return load_generator(require(TINY))


@pytest.fixture(scope="module")
def directions(G):
    return sefa_directions(G, KEY)


def _affines_from_state_dict(G) -> np.ndarray:
    """A, read independently of the viewer: the modulated convolutions' affine weights by their
    official parameter names, times the equalised-learning-rate gain 1/sqrt(w_dim)."""
    state = G.state_dict()
    names = sorted((k for k in state if re.fullmatch(r"backbone\.synthesis\.b\d+\.conv[01]\.affine\.weight", k)),
                   key=lambda k: (int(k.split(".")[2][1:]), k))
    assert len(names) == 13  # b4: conv1; b8..b256: conv0 + conv1 (ToRGB layers are not style layers here)
    return np.concatenate([state[k].double().numpy() / np.sqrt(G.w_dim) for k in names])


def test_sefa_directions_are_the_top_eigenvectors(G, directions):
    A = _affines_from_state_dict(G)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    eigenvalues, eigenvectors = np.linalg.eigh(A.T @ A)
    order = np.argsort(eigenvalues)[::-1]
    k = len(directions)
    np.testing.assert_allclose(directions.eigenvalues, eigenvalues[order][:k], rtol=1e-6)
    cos = np.abs(np.sum(directions.vectors.astype(np.float64) * eigenvectors[:, order][:, :k].T, axis=1))
    assert np.all(cos[:8] > 0.999)  # the sliders' directions (later ones may share near-equal eigenvalues)
    # unit, orthogonal, and the largest component positive (stable signs)
    np.testing.assert_allclose(directions.vectors @ directions.vectors.T, np.eye(k), atol=1e-5)
    top = directions.vectors[np.arange(k), np.abs(directions.vectors).argmax(1)]
    assert np.all(top > 0)
    # the first direction moves the styles more than any random one
    rng = np.random.default_rng(0)
    r = rng.standard_normal((200, G.w_dim))
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    assert np.linalg.norm(A @ directions.vectors[0]) > np.linalg.norm(A @ r.T, axis=0).max()


def test_sigma_is_the_spread_of_mapped_w(G, directions):
    assert directions.sigma.shape == (len(directions),) and np.all(directions.sigma > 0)
    z = torch.randn(3000, G.z_dim, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        w = G.mapping(z, torch.zeros(3000, G.c_dim))[:, 0].double().numpy()
    spread = (w @ directions.vectors[:4].T.astype(np.float64)).std(0)
    np.testing.assert_allclose(directions.sigma[:4], spread, rtol=0.1)  # other samples, same spread


def test_cache_is_per_checkpoint_hash(G, tmp_path, monkeypatch):
    first, warning = cached_sefa_directions(G, KEY, tmp_path)
    assert warning is None and [p.name for p in tmp_path.iterdir()] == [f"{KEY}.npz"]

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(editing, "sefa_directions", refuse)
    again, _ = cached_sefa_directions(G, KEY, tmp_path)
    np.testing.assert_array_equal(again.vectors, first.vectors)
    np.testing.assert_array_equal(again.sigma, first.sigma)
    with pytest.raises(AssertionError, match="recomputed"):  # another checkpoint: not served from this file
        cached_sefa_directions(G, "cd" * 32, tmp_path)
    monkeypatch.undo()

    (tmp_path / f"{KEY}.npz").write_bytes(b"not an npz")  # damaged: recomputed and rewritten
    fixed, _ = cached_sefa_directions(G, KEY, tmp_path)
    np.testing.assert_array_equal(fixed.vectors, first.vectors)
    assert SefaDirections.load(tmp_path / f"{KEY}.npz", KEY) is not None
    assert SefaDirections.load(tmp_path / f"{KEY}.npz", "cd" * 32) is None  # keyed inside the file too

    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    directions, warning = cached_sefa_directions(G, KEY, blocked / "sefa")
    assert len(directions) == len(first) and "not cached" in warning
    with pytest.raises(ValueError, match="hex digest"):
        cached_sefa_directions(G, "../escape", tmp_path)


@pytest.mark.parametrize("params, message", [
    ({"sefa": "0"}, "INDEX:OFFSET"), ({"sefa": "x:1"}, "sefa index"), ({"sefa": "0:nan"}, "finite"),
    ({"sefa": "0:11"}, "within"), ({"sefa": "-1:1"}, "non-negative"), ({"sefa": "1:1,1:2"}, "twice"),
    ({"psi": "3"}, "psi"), ({"psi": "inf"}, "psi"), ({"blend": "0.5"}, "other"), ({"blend": "2", "other": "a"}, "blend"),
    ({"layers": "middle"}, "layers"),
])
def test_bad_edit_parameters(params, message):
    with pytest.raises(ConfigError, match=message):
        Edit.from_params(params)


def test_edit_parameters_round_trip():
    edit = Edit.from_params({"sefa": "3:-2, 0:1.5,5:0", "psi": "0.7", "other": "b", "blend": "0.25", "layers": "fine"})
    assert edit.sefa == ((0, 1.5), (3, -2.0)) and edit.psi == 0.7 and edit.layers == "fine"
    assert Edit.from_params(edit.to_params()) == edit
    assert Edit.from_params({"other": "b", "layers": "coarse"}) == Edit()  # nothing taken from b
    assert Edit().is_identity and not edit.is_identity and Edit().to_params() == {}


def test_apply_edit_arithmetic(G, directions):
    torch.manual_seed(0)
    ws = torch.randn(1, G.num_ws, G.w_dim)
    other = torch.randn(1, G.num_ws, G.w_dim)
    avg = G.w_avg
    same = dict(w_avg=avg, directions=directions, other_ws=other)
    torch.testing.assert_close(apply_edit(ws, Edit(), **same), ws)
    torch.testing.assert_close(apply_edit(ws, Edit(psi=0), **same), avg.expand_as(ws))
    torch.testing.assert_close(apply_edit(ws, Edit(psi=0.5), **same), avg + 0.5 * (ws - avg))
    torch.testing.assert_close(apply_edit(ws, Edit(other="b", blend=1), **same), other)
    half = G.num_ws // 2
    coarse = apply_edit(ws, Edit(other="b", blend=1, layers="coarse"), **same)
    torch.testing.assert_close(coarse[:, :half], other[:, :half])
    torch.testing.assert_close(coarse[:, half:], ws[:, half:])
    fine = apply_edit(ws, Edit(other="b", blend=0.5, layers="fine"), **same)
    torch.testing.assert_close(fine[:, half:], (ws[:, half:] + other[:, half:]) / 2)
    torch.testing.assert_close(fine[:, :half], ws[:, :half])
    moved = apply_edit(ws, Edit(sefa=((2, 1.5),)), **same)
    step = 1.5 * float(directions.sigma[2]) * torch.from_numpy(directions.vectors[2])
    torch.testing.assert_close(moved - ws, step.expand_as(ws), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="does not exist"):
        apply_edit(ws, Edit(sefa=((len(directions), 1.0),)), **same)


def test_partial_synthesis_is_the_coarse_share_of_the_planes(G):
    torch.manual_seed(1)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim), torch.zeros(1, G.c_dim))
        synthesis = G.backbone.synthesis
        full = synthesis(ws, noise_mode="const")
        torch.testing.assert_close(synthesis(ws, noise_mode="const", max_resolution=256), full)
        assert synthesis(ws, noise_mode="const", max_resolution=32).shape[-1] == 32
        with pytest.raises(ValueError, match="max_resolution"):
            synthesis(ws, max_resolution=48)


def test_coarse_edited_previews(G, directions):
    torch.manual_seed(2)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim), torch.zeros(1, G.c_dim))
    base = Scene.from_ws(G, ws)
    edited = apply_edit(ws, Edit(sefa=((0, 3.0), (1, -2.0))), w_avg=G.w_avg, directions=directions)
    exact = Scene.from_ws(G, edited).planes
    # all blocks recomputed: the exact planes (upsampling is linear, the rest is the same code)
    last = G.backbone.synthesis.block_resolutions[-1]
    full = coarse_edit_scene(base, coarse_skip(G, ws, last), edited, last)
    torch.testing.assert_close(full.planes, exact, atol=1e-4, rtol=1e-4)
    # blocks up to 32: no edit gives the base planes; an edit moves them toward the exact ones
    skip = coarse_skip(G, ws, 32)
    torch.testing.assert_close(coarse_edit_scene(base, skip, ws, 32).planes, base.planes)
    approx = coarse_edit_scene(base, skip, edited, 32).planes
    assert torch.dist(approx, exact) < torch.dist(base.planes, exact)
    assert not torch.equal(approx, exact)


def test_live_settings_by_device(G):
    cpu = LiveSettings().for_generator(G)
    assert cpu.preview_resolution == G.neural_rendering_resolution // 2 and cpu.coarse_edit_resolution == 32
    exact = LiveSettings(coarse_edit_resolution=None, preview_resolution=24).for_generator(G)
    assert exact.coarse_edit_resolution is None and exact.preview_resolution == 24
    assert LiveSettings(coarse_edit_resolution=256).for_generator(G).coarse_edit_resolution is None  # = exact
    assert int(48 * LiveSettings().preview_sample_mult(_Counts())) == 12
    assert LiveSettings().preview_sample_mult(G) == 1.0  # tiny_A has only 12 + 12 samples
    for bad in (dict(preview_samples=3), dict(preview_resolution=4), dict(full_sample_mult=0),
                dict(mesh_resolution=8)):
        with pytest.raises(ConfigError):
            LiveSettings(**bad)
    with pytest.raises(ConfigError, match="block resolutions"):
        LiveSettings(coarse_edit_resolution=48).for_generator(G)


class _Counts:
    rendering_kwargs = {"depth_resolution": 48}

