"""Loading checkpoints: official layout, safety against hostile pickles, our formats, CUDA-saved files."""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import pickletools
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from eg3d_invert.errors import CheckpointError, UnsafeCheckpointError
from eg3d_invert.generator import TriPlaneGenerator
from eg3d_invert.pretrained import file_sha256, load_generator, save_generator
from eg3d_invert.pretrained.official import FFHQ512_128_INIT_KWARGS

from .conftest import REFERENCE, reference_npz, require


@functools.lru_cache(maxsize=None)
def tiny(name="tiny_A"):
    return load_generator(require(REFERENCE / f"{name}.pkl"))


def render(G, n=2):
    ref = reference_npz("tiny_A")
    with torch.no_grad():
        return G.synthesis(torch.from_numpy(ref["ws"][:n]), torch.from_numpy(ref["c"][:n]), deterministic=True)


# --- the official layout -------------------------------------------------------------------------


def test_ffhq512_128_has_the_official_names_shapes_and_parameter_count():
    inventory = json.loads(require(REFERENCE / "ffhq512-128_inventory.json").read_text())
    with torch.device("meta"):
        G = TriPlaneGenerator(**FFHQ512_128_INIT_KWARGS)
    sd = G.state_dict()
    shapes = {t["name"]: t["shape"] for t in inventory["G_tensors"]}
    official = [k for k in inventory["G_state_dict_keys"] if k != "dataset_label_std"]
    assert list(sd) == official
    assert {k: list(v.shape) for k, v in sd.items()} == {k: shapes[k] for k in official}
    assert sum(p.numel() for p in G.parameters()) == 30_662_136
    assert sum(p.numel() for p in G.parameters()) == inventory["counts"]["G"]["parameters"]
    assert G.num_ws == 14
    assert G.rendering_kwargs["superresolution_module"].endswith("SuperresolutionHybrid8XDC")


def test_loader_returns_g_ema_not_g():
    """G and G_ema differ in the reference files; the outputs only match G_ema."""
    G = tiny()
    ref = reference_npz("tiny_A")
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert G.neural_rendering_resolution == 32
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(ref["z"]), torch.from_numpy(ref["c_cond"])[None].expand(4, -1))
    np.testing.assert_allclose(ws.numpy(), ref["ws"], atol=1e-4)


def test_all_four_superresolution_modules_build_with_their_sizes():
    base = json.loads(json.dumps(FFHQ512_128_INIT_KWARGS))
    for module, res, nrr in [("SuperresolutionHybrid2X", 128, 64), ("SuperresolutionHybrid4X", 256, 128),
                             ("SuperresolutionHybrid8X", 512, 64), ("SuperresolutionHybrid8XDC", 512, 128)]:
        kw = json.loads(json.dumps(base))
        kw["img_resolution"] = res
        kw["channel_base"], kw["channel_max"] = 256, 8
        kw["rendering_kwargs"]["superresolution_module"] = f"training.superresolution.{module}"
        kw["rendering_kwargs"]["depth_resolution"] = kw["rendering_kwargs"]["depth_resolution_importance"] = 4
        G = TriPlaneGenerator(**kw).eval()
        ws = G.mapping(torch.randn(1, 512), torch.zeros(1, 25))
        with torch.no_grad():
            raw = torch.randn(1, 3, nrr, nrr)
            out = G.superresolution(raw, torch.randn(1, 32, nrr, nrr), ws, noise_mode="none")
        assert out.shape == (1, 3, res, res), module


def test_wrong_superresolution_size_is_a_clear_error():
    kw = json.loads(json.dumps(FFHQ512_128_INIT_KWARGS))
    kw["img_resolution"] = 256
    with pytest.raises(ValueError, match="512x512"):
        with torch.device("meta"):
            TriPlaneGenerator(**kw)


# --- hostile pickles -------------------------------------------------------------------------------


class _Reduce:
    """An object that pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _fake_official_modules(monkeypatch):
    """Register stand-ins under the official module names so the pickler can reference them."""
    tu = types.ModuleType("torch_utils")
    pers = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - only pickled, never called
        raise AssertionError

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    pers._reconstruct_persistent_obj = _reconstruct_persistent_obj
    tu.persistence = pers
    monkeypatch.setitem(sys.modules, "torch_utils", tu)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", pers)
    return pers


def _hostile_payloads(marker):
    cmd = f"touch {marker}"
    return {
        "os.system": _Reduce(os.system, cmd),
        "exec": _Reduce(exec, f"open({str(marker)!r}, 'w').close()"),
        "eval": _Reduce(eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess": _Reduce(subprocess.check_call, ["touch", str(marker)]),
    }


@pytest.mark.parametrize("kind", ["os.system", "exec", "eval", "subprocess"])
@pytest.mark.parametrize("where", ["top", "nested"])
def test_hostile_pickles_are_refused_and_nothing_runs(tmp_path, kind, where):
    marker = tmp_path / "pwned"
    payload = _hostile_payloads(marker)[kind]
    obj = {"G_ema": payload} if where == "top" else \
        {"training_set_kwargs": {"a": [1, {"b": (2, payload)}]}, "G_ema": None}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(UnsafeCheckpointError) as info:
        load_generator(path)
    message = str(info.value)
    assert str(path) in message and "refusing" in message
    assert "system" in message or "exec" in message or "eval" in message or "check_call" in message
    assert not marker.exists()


def test_unknown_module_is_refused_by_name(tmp_path):
    mod = types.ModuleType("eg3d_plugins_evil")

    def payload():  # pragma: no cover - never called
        raise AssertionError

    payload.__module__, payload.__qualname__ = "eg3d_plugins_evil", "payload"
    mod.payload = payload
    sys.modules["eg3d_plugins_evil"] = mod
    try:
        data = pickle.dumps({"G_ema": _Reduce(payload)}, protocol=4)
    finally:
        del sys.modules["eg3d_plugins_evil"]
    path = tmp_path / "unknown.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError, match="eg3d_plugins_evil.payload"):
        load_generator(path)


def test_embedded_module_source_is_never_executed(tmp_path, monkeypatch):
    """Official files carry source code in module_src; the official loader execs it, we must not."""
    pers = _fake_official_modules(monkeypatch)
    marker = tmp_path / "pwned"
    meta = {"type": "class", "version": 6, "class_name": "TriPlaneGenerator",
            "module_src": f"import os\nos.system('touch {marker}')\n",
            "state": {"_parameters": {}, "_buffers": {}, "_modules": {}, "_init_args": (), "_init_kwargs": {}}}
    path = tmp_path / "src.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Reduce(pers._reconstruct_persistent_obj, meta)}, protocol=4))
    with pytest.raises(CheckpointError):
        load_generator(path)
    assert not marker.exists()


def test_hostile_tensor_storage_is_refused(tmp_path):
    """Storages are nested torch.save streams; they go through torch's weights-only loader."""
    marker = tmp_path / "pwned"
    inner = io.BytesIO()
    torch.save(_Reduce(os.system, f"touch {marker}"), inner, _use_new_zipfile_serialization=False)
    path = tmp_path / "storage.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Reduce(torch.storage._load_from_bytes, inner.getvalue())}, protocol=4))
    refused = "tensor storage: it references the global '(posix|nt).system'"
    with pytest.raises(UnsafeCheckpointError, match=refused) as info:
        load_generator(path)
    assert "weights_only" not in str(info.value)
    assert not marker.exists()


def test_garbage_is_a_clear_checkpoint_error(tmp_path):
    for name, data in [("empty.pkl", b""), ("text.pkl", b"hello world, not a checkpoint"),
                       ("trunc.pkl", require(REFERENCE / "tiny_A.pkl").read_bytes()[:4096])]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_generator(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# --- tensors saved on a CUDA device --------------------------------------------------------------


def _relocate_storages(data: bytes, location: bytes) -> bytes:
    """Rewrite an official pickle so every storage records ``location`` (e.g. b'cuda:0').

    Each storage is a nested legacy torch stream naming its device as a pickled string; the
    outer pickle is re-emitted opcode by opcode (without FRAME markers, which are optional).
    """
    old = b"X\x03\x00\x00\x00cpu"
    new = b"X" + len(location).to_bytes(4, "little") + location
    out = bytearray()
    ops = list(pickletools.genops(data))
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name == "FRAME":
            continue
        if op.name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8") and old in arg:
            blob = arg.replace(old, new)
            out += b"B" + len(blob).to_bytes(4, "little") + blob
        else:
            out += data[pos:end]
    return bytes(out)


def test_cuda_saved_checkpoint_loads_on_cpu(tmp_path):
    original = require(REFERENCE / "tiny_A.pkl").read_bytes()
    patched = _relocate_storages(original, b"cuda:0")
    assert patched.count(b"cuda:0") > 100
    # The patch really makes storages CUDA ones: torch refuses them without a device map here.
    if not torch.cuda.is_available():
        inner = next(arg for op, arg, _ in pickletools.genops(patched) if op.name == "BINBYTES" and b"cuda:0" in arg)
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(io.BytesIO(inner), weights_only=True)
    path = tmp_path / "cuda_saved.pkl"
    path.write_bytes(patched)
    G = load_generator(path, device="cpu")
    assert G.device.type == "cpu"
    torch.testing.assert_close(render(G)["image"], render(tiny())["image"], rtol=0, atol=0)


# --- our formats and the PTI/projector format ------------------------------------------------------


def test_native_round_trip_is_exact(tmp_path):
    G = tiny()
    path = save_generator(G, tmp_path / "g.safetensors")
    G2 = load_generator(path)
    for (k, a), (k2, b) in zip(G.state_dict().items(), G2.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert G2.neural_rendering_resolution == G.neural_rendering_resolution
    assert G2.rendering_kwargs == G.rendering_kwargs and G2.init_kwargs == G.init_kwargs
    torch.testing.assert_close(render(G2)["image"], render(G)["image"], rtol=0, atol=0)
    assert not list(tmp_path.glob(".*"))  # no temporary files left


@pytest.mark.parametrize("second_byte", [0x3D, 0x04])
def test_safetensors_whose_header_length_looks_like_a_pickle_loads(tmp_path, second_byte):
    """The header length is the file's first bytes: 0x80 then 0x3d read as 'pickle protocol 61'.

    (A CI run hit this when a temporary path in the header made its length 0x3d80.) The header is
    re-padded with spaces, which the safetensors format allows, to a length of that shape.
    """
    from eg3d_invert.pretrained.loading import detect_format

    G = tiny()
    data = save_generator(G, tmp_path / "g.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    target = (second_byte << 8) | 0x80
    while target < n:
        target += 0x10000
    path = tmp_path / "padded.safetensors"
    path.write_bytes(target.to_bytes(8, "little") + data[8:8 + n] + b" " * (target - n) + data[8 + n:])
    assert path.read_bytes()[:2] == bytes([0x80, second_byte])
    assert detect_format(path) == "safetensors"
    G2 = load_generator(path)
    for (k, a), (k2, b) in zip(G.state_dict().items(), G2.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_delta_file_holds_only_changed_tensors_and_checks_its_base(tmp_path):
    base = tiny()
    tuned = load_generator(require(REFERENCE / "tiny_A.pkl"))
    with torch.no_grad():
        tuned.decoder.net[0].bias.add_(0.5)
        tuned.backbone.synthesis.b32.conv1.weight.mul_(1.1)
    info = {"sha256": file_sha256(base.checkpoint_path), "path": base.checkpoint_path, "name": "tiny_A"}
    path = save_generator(tuned, tmp_path / "tuned.safetensors", base=base, base_info=info)
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == ["backbone.synthesis.b32.conv1.weight", "decoder.net.0.bias"]
    # The base is found where it was recorded, hash-checked, and the renders match.
    again = load_generator(path)
    torch.testing.assert_close(render(again)["image"], render(tuned)["image"], rtol=0, atol=0)
    # A wrong base is refused.
    other = tmp_path / "other.safetensors"
    save_generator(tuned, other)
    bad = dict(info, path=str(other))
    path2 = save_generator(tuned, tmp_path / "tuned2.safetensors", base=base, base_info=dict(bad, sha256="0" * 64))
    with pytest.raises(CheckpointError, match="base checkpoint"):
        load_generator(path2)


def test_g_ema_state_dict_files_load_with_a_base_config(tmp_path):
    G = tiny()
    path = tmp_path / "model_pti.pth"
    sd = dict(G.state_dict())
    sd["dataset_label_std"] = torch.ones(25)  # as written by the training loop's G_ema
    torch.save({"G_ema": sd}, path)
    with pytest.raises(CheckpointError, match="base="):
        load_generator(path)
    G2 = load_generator(path, base=require(REFERENCE / "tiny_A.pkl"))
    torch.testing.assert_close(render(G2)["image"], render(G)["image"], rtol=0, atol=0)
    G3 = load_generator(path, base=G)
    assert G3.neural_rendering_resolution == 32
    with pytest.raises(CheckpointError, match="do not match"):
        load_generator(path, base="ffhq512-128")  # the tiny weights do not fit the real config


def test_info_describes_a_checkpoint():
    from eg3d_invert.pretrained import describe_checkpoint
    info = describe_checkpoint(require(REFERENCE / "tiny_C.pkl"))
    assert info["img_resolution"] == 512 and info["neural_rendering_resolution"] == 128
    assert info["superresolution_module"] == "SuperresolutionHybrid8XDC"
    assert info["parameters"] == 2_118_560
    assert info["rendering"]["depth_resolution"] == 8
    assert len(info["sha256"]) == 64


def test_4x_without_resize_reproduces_the_official_raw_side_effect_and_keeps_gradients():
    """Official 2X/4X add their first ToRGB in place into image_raw when nothing is resized."""
    kw = json.loads(json.dumps(FFHQ512_128_INIT_KWARGS))
    kw.update(img_resolution=256, channel_base=256, channel_max=8)
    kw["rendering_kwargs"].update(superresolution_module="training.superresolution.SuperresolutionHybrid4X",
                                  depth_resolution=4, depth_resolution_importance=4)
    torch.manual_seed(0)
    G = TriPlaneGenerator(**kw).eval()
    G.neural_rendering_resolution = 128
    ws = G.mapping(torch.randn(1, 512), torch.zeros(1, 25)).detach().requires_grad_()
    from eg3d_invert.camera import Camera
    c = Camera.from_angles(10.0, 0.0).label
    clean = G.synthesis(ws, c, deterministic=True, run_superresolution=False)["image_raw"]
    official = G.synthesis(ws, c, deterministic=True)
    assert (official["image_raw"] - clean).abs().max() > 1e-3
    official["image"].sum().backward()  # the official code fails here on CPU; we do not
    assert torch.isfinite(ws.grad).all()
    G.official_aliased_raw = False
    torch.testing.assert_close(G.synthesis(ws, c, deterministic=True)["image_raw"], clean)


def test_checkpoint_source_is_a_declared_field_of_the_generator(tmp_path):
    with torch.device("meta"):
        built = TriPlaneGenerator(**FFHQ512_128_INIT_KWARGS)
    assert built.checkpoint_path is None and built.checkpoint_format is None  # built in memory: no file
    G = tiny()
    assert G.checkpoint_path.endswith("tiny_A.pkl") and G.checkpoint_format == "official-pickle"
    G2 = load_generator(save_generator(G, tmp_path / "g.safetensors"))
    assert G2.checkpoint_path == str(tmp_path / "g.safetensors") and G2.checkpoint_format == "safetensors"


def test_a_device_this_machine_lacks_is_named_with_the_available_ones():
    from eg3d_invert.devices import available_devices
    from eg3d_invert.errors import ConfigError, DeviceError

    missing = ["cuda:999"] + [d for d in ("cuda", "mps") if d not in {a.split(":")[0] for a in available_devices()}]
    for device in missing:
        with pytest.raises(DeviceError) as info:
            load_generator(require(REFERENCE / "tiny_A.pkl"), device=device)
        message = str(info.value)
        assert repr(device) in message and "available: cpu" in message and "checkpoint" not in message
    for bad in ("gpu", "cuda:x", "meta"):
        with pytest.raises(ConfigError, match="device"):
            load_generator(require(REFERENCE / "tiny_A.pkl"), device=bad)
    assert load_generator(require(REFERENCE / "tiny_A.pkl"), device="cpu").device.type == "cpu"


# --- malformed and hostile files: one-line errors ------------------------------------------------------


def _safetensors_with_header(path, header, tensors=None):
    from safetensors.torch import save_file

    save_file(tensors or {"x": torch.zeros(2)}, str(path), metadata={"eg3d_invert": json.dumps(header)})
    return path


def test_malformed_checkpoints_are_one_line_errors(tmp_path):
    import struct

    from eg3d_invert.pretrained.native import generator_config

    G = tiny()
    good = {"format": "eg3d-invert/generator", "version": 1, **json.loads(json.dumps(generator_config(G)))}
    weights = {k: v.contiguous() for k, v in G.state_dict().items()}

    def header(**changes):
        h = json.loads(json.dumps(good))
        for key, value in changes.items():
            if "." in key:
                outer, inner = key.split(".")
                h[outer][inner] = value
            elif value is None:
                h.pop(key)
            else:
                h[key] = value
        return h

    files = {
        # pickles that declare more bytes than they hold (a frame, a string)
        "frame.pkl": b"\x80\x04\x95" + struct.pack("<Q", 2 ** 40) + b"}",
        "frame_max.pkl": b"\x80\x04\x95" + struct.pack("<Q", 2 ** 63 - 1) + b"}",
        "string.pkl": b"\x80\x04\x8d" + struct.pack("<Q", 2 ** 62) + b"abc",
        # safetensors whose header lacks the configuration or has values of the wrong type
        "no_config.safetensors": {"format": "eg3d-invert/generator", "version": 1},
        "version.safetensors": header(version="one"),
        "init_list.safetensors": header(init_kwargs=[1, 2]),
        "z_dim.safetensors": header(**{"init_kwargs.z_dim": "512"}),
        "mapping.safetensors": header(**{"init_kwargs.mapping_kwargs": "x"}),
        "resolution.safetensors": header(neural_rendering_resolution="32"),
        "rendering_list.safetensors": header(rendering_kwargs=[1]),
        "depth_samples.safetensors": header(**{"rendering_kwargs.depth_resolution": "48"}),
        "ray_range.safetensors": header(**{"rendering_kwargs.ray_end": 1.0}),
        "base_without_hash.safetensors": header(base={"path": "x"}),
    }
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            _safetensors_with_header(path, content, weights)
        with pytest.raises(CheckpointError) as info:
            load_generator(path)
        message = str(info.value)
        assert message.startswith(str(path)) and "\n" not in message, (name, message)


def test_hostile_pth_names_the_refused_global_and_never_suggests_unsafe_loading(tmp_path):
    from eg3d_invert.errors import MissingWeightsError
    from eg3d_invert.inversion import Pivot, load_lpips

    marker = tmp_path / "pwned"
    hostile = _Reduce(os.system, f"touch {marker}")
    pth = tmp_path / "model.pth"
    torch.save({"G_ema": {"w": hostile}}, pth)
    pivot = tmp_path / "pivot.pt"
    torch.save({"format": "eg3d-invert/pivot", "ws": hostile}, pivot)
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({"features.0.weight": hostile}, home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    attempts = [lambda: load_generator(pth, base=require(REFERENCE / "tiny_A.pkl")), lambda: Pivot.load(pivot)]
    for attempt in attempts:
        with pytest.raises(UnsafeCheckpointError) as info:
            attempt()
        message = str(info.value)
        assert "'posix.system'" in message or "'nt.system'" in message, message
        assert "weights_only" not in message and "\n" not in message
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        with pytest.raises((UnsafeCheckpointError, MissingWeightsError)) as info:
            load_lpips("alex")
    assert "system" in str(info.value) and "weights_only" not in str(info.value)
    assert not marker.exists()

