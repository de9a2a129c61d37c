"""Checkpoint registry, cache location, name/path/URL resolution and the `models` CLI command.

Nothing here touches the internet: registry entries are pointed at a local server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import platformdirs
import pytest
import typer
from typer.testing import CliRunner

from eg3d_invert import camera
from eg3d_invert.cli import app
from eg3d_invert.errors import (CheckpointError, ChecksumMismatchError, DownloadError, MissingWeightsError,
                                UnknownModelError)
from eg3d_invert.pretrained import (ModelInfo, cache_dir, cached_path, get_model_info, is_cached, list_models,
                                    resolve_checkpoint)
from eg3d_invert.pretrained import registry
from eg3d_invert.pretrained.cache import url_cached_path, url_filename
from tests.conftest import REFERENCE, require
from tests.local_http import closed_port, file_server  # noqa: F401 - pytest fixture

OFFICIAL = ["ffhq512-128", "ffhqrebalanced512-128", "ffhqrebalanced512-64", "afhqcats512-128",
            "shapenetcars128-64", "ffhq512-64"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Every test gets its own empty cache; the user's real cache is never read or written."""
    root = tmp_path / "home"
    monkeypatch.setenv("EG3D_INVERT_HOME", str(root))
    return root


@pytest.fixture
def local_model(file_server, monkeypatch):  # noqa: F811
    """Registry entry ffhq512-128 re-pointed at the local server, serving tiny_A.pkl with its real hash."""
    data = require(REFERENCE / "tiny_A.pkl").read_bytes()
    file_server.files["/eg3d/ffhq512-128.pkl"] = data
    info = dataclasses.replace(registry.get_model_info("ffhq512-128"), url=file_server.url("/eg3d/ffhq512-128.pkl"),
                               sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    monkeypatch.setitem(registry._MODELS, "ffhq512-128", info)
    return file_server, info, data


# --- registry -----------------------------------------------------------------------------------


def test_official_names_urls_and_frozen_entries():
    models = list_models()
    assert [m.name for m in models] == OFFICIAL
    for m in models:
        assert isinstance(m, ModelInfo)
        assert m.url == f"https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files/{m.name}.pkl"
        assert m.filename == f"{m.name}.pkl"
        assert m.neural_rendering_resolution == int(m.name.rsplit("-", 1)[1])
        with pytest.raises(dataclasses.FrozenInstanceError):
            m.url = "http://elsewhere"  # type: ignore[misc]
        json.dumps(m.to_dict())  # JSON-ready


def test_known_hashes_are_the_anchored_third_party_ones():
    expected = {  # the third-party mirrors' published values
        "ffhqrebalanced512-128": ("7f418947f38202a3c4c9de6e18d0617b380dd5e42c21ba78efe8cc235fde44a7", 377_644_956),
        "ffhq512-128": ("e737eeb9a3e1be1812164a70eec22e17b3cb3c57b45c306d01f7a54e58889298", 377_645_529),
        "afhqcats512-128": ("6bf73d5d1352685ff1bdf68d8c4f64ae2b05ca427a8e757601021901a1ee2672", None),
    }
    for m in list_models():
        if m.name in expected:
            assert (m.sha256, m.size_bytes) == expected[m.name]
            assert m.sha256_source.startswith("third-party") and not m.sha256_from_nvidia
            assert re.fullmatch(r"[0-9a-f]{64}", m.sha256)
        else:
            assert m.sha256 is None and m.sha256_source is None
    assert get_model_info("afhqcats512-128").approx_size_bytes == 369_000_000


def test_ffhq512_64_is_flagged_as_probably_not_on_ngc():
    info = get_model_info("ffhq512-64")
    assert info.on_ngc is False and "NGC" in info.notes
    assert all(m.on_ngc for m in list_models() if m.name != "ffhq512-64")


def test_camera_conventions_per_dataset():
    for m in list_models():
        if m.name.startswith("ffhq"):
            assert m.camera_pivot == tuple(camera.FFHQ_PIVOT) and m.camera_radius == camera.FFHQ_RADIUS
            assert m.focal == camera.FFHQ_FOCAL and m.image_resolution == 512
    cats = get_model_info("afhqcats512-128")
    assert (cats.camera_pivot, cats.camera_radius, cats.focal) == ((0.0, 0.0, -0.06), 2.7, 4.2647)
    cars = get_model_info("shapenetcars128-64")
    assert (cars.camera_pivot, cars.camera_radius, cars.focal, cars.image_resolution) == ((0.0, 0.0, 0.0), 1.7,
                                                                                          1.7074, 128)
    assert get_model_info("ffhq512-128").sr_module == "SuperresolutionHybrid8XDC"


def test_lookup_is_forgiving_but_unknown_names_are_explained():
    assert get_model_info("FFHQ512-128.pkl").name == "ffhq512-128"
    with pytest.raises(UnknownModelError) as err:
        get_model_info("ffhq512-12")
    msg = str(err.value)
    assert "did you mean 'ffhq512-128'" in msg
    assert all(name in msg for name in OFFICIAL)
    with pytest.raises(UnknownModelError) as err:
        get_model_info("stylegan3")
    assert "did you mean" not in str(err.value)
    assert isinstance(err.value, CheckpointError)


# --- cache --------------------------------------------------------------------------------------


def test_cache_dir_honours_env_and_falls_back_to_platform_dir(home, monkeypatch):
    assert cache_dir() == home
    assert cached_path("ffhq512-128") == home / "checkpoints" / "ffhq512-128.pkl"
    assert not is_cached("ffhq512-128")
    cached_path("ffhq512-128").parent.mkdir(parents=True)
    cached_path("ffhq512-128").write_bytes(b"x")
    assert is_cached("ffhq512-128") and not is_cached("ffhq512-64")
    monkeypatch.delenv("EG3D_INVERT_HOME")
    assert cache_dir() == __import__("pathlib").Path(platformdirs.user_cache_dir("eg3d-invert"))
    with pytest.raises(UnknownModelError):
        cached_path("nope")


def test_url_file_names():
    assert url_filename("https://h.example/a/b/model%20v2.pkl?x=1") == "model_v2.pkl"
    assert url_filename("https://api.ngc.nvidia.com/v2/models/org/nvidia/team/research/eg3d/1/files"
                        "?redirect=true&path=ffhqrebalanced512-128.pkl") == "ffhqrebalanced512-128.pkl"
    assert url_filename("https://h.example/x/../../etc/passwd") == "passwd"
    with pytest.raises(DownloadError):
        url_filename("https://h.example/")
    # a foreign file with an official name never lands on the official name's cache path
    assert url_cached_path("https://h.example/ffhq512-128.pkl") != cached_path("ffhq512-128")


# --- resolve_checkpoint -------------------------------------------------------------------------


def test_resolve_existing_path_as_is(tmp_path, file_server):  # noqa: F811
    f = tmp_path / "mine.pkl"
    f.write_bytes(b"weights")
    assert resolve_checkpoint(f) == f
    assert resolve_checkpoint(str(f)) == f
    assert file_server.requests == []
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(tmp_path / "missing.pkl")
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(str(tmp_path / "missing.pkl"))
    with pytest.raises(CheckpointError, match="folder"):
        resolve_checkpoint(str(tmp_path))


def test_resolve_name_downloads_once_into_cache(local_model, home):
    srv, info, data = local_model
    with pytest.raises(MissingWeightsError) as err:
        resolve_checkpoint("ffhq512-128", download=False)
    assert info.url in str(err.value) and str(cached_path("ffhq512-128")) in str(err.value)
    assert srv.requests == []

    path = resolve_checkpoint("ffhq512-128", progress=False)
    assert path == home / "checkpoints" / "ffhq512-128.pkl" and path.read_bytes() == data
    assert is_cached("ffhq512-128")
    assert resolve_checkpoint("ffhq512-128", download=False) == path
    assert len(srv.requests) == 1  # second and third resolution came from the cache
    # the registry URL itself is recognised as that entry
    assert resolve_checkpoint(info.url) == path and len(srv.requests) == 1


def test_resolve_name_with_mismatching_hash_explains_the_mirror(local_model, monkeypatch):
    srv, info, data = local_model
    monkeypatch.setitem(registry._MODELS, "ffhq512-128", dataclasses.replace(info, sha256="1" * 64))
    with pytest.raises(ChecksumMismatchError, match="third-party mirror.*verify=False"):
        resolve_checkpoint("ffhq512-128", progress=False)
    assert not (cache_dir() / "checkpoints").exists() or list((cache_dir() / "checkpoints").iterdir()) == []
    assert resolve_checkpoint("ffhq512-128", progress=False, verify=False).read_bytes() == data


def test_resolve_url_downloads_under_its_file_name(file_server, home):  # noqa: F811
    data = require(REFERENCE / "tiny_A.pkl").read_bytes()
    file_server.files["/some/where/tiny_A.pkl"] = data
    url = file_server.url("/some/where/tiny_A.pkl")
    path = resolve_checkpoint(url, progress=False)
    assert path.name == "tiny_A.pkl" and path.read_bytes() == data
    assert home in path.parents
    assert resolve_checkpoint(url) == path and len(file_server.requests) == 1


def test_resolve_offline_message_names_url_and_path(monkeypatch):
    info = registry.get_model_info("ffhqrebalanced512-64")
    url = f"http://127.0.0.1:{closed_port()}/ffhqrebalanced512-64.pkl"
    monkeypatch.setitem(registry._MODELS, info.name, dataclasses.replace(info, url=url))
    with pytest.raises(DownloadError) as err:
        resolve_checkpoint("ffhqrebalanced512-64", progress=False)
    assert url in str(err.value) and str(cached_path("ffhqrebalanced512-64")) in str(err.value)


def test_resolve_rejects_everything_else():
    with pytest.raises(UnknownModelError, match="not an existing file.*did you mean 'ffhq512-128'"):
        resolve_checkpoint("ffhq512_128")
    with pytest.raises(CheckpointError, match="http"):
        resolve_checkpoint("ftp://example.com/x.pkl")


# --- CLI ----------------------------------------------------------------------------------------


def _invoke(*args: str):
    # While `models` is the only command, typer runs it as the app itself (no sub-command name).
    group = hasattr(typer.main.get_command(app), "commands")
    return CliRunner().invoke(app, (["models"] if group else []) + list(args))


def test_cli_models_table():
    result = _invoke()
    assert result.exit_code == 0, result.output
    for name in OFFICIAL:
        assert name in result.output
    assert "third-party" in result.output


def test_cli_models_json_and_download(local_model, home):
    srv, info, data = local_model
    result = _invoke("--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [m["name"] for m in doc["models"]] == OFFICIAL
    assert doc["cache_dir"] == str(home) and doc["downloaded"] is None
    assert not any(m["cached"] for m in doc["models"])

    result = _invoke("--download", "ffhq512-128", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["downloaded"] == str(cached_path("ffhq512-128"))
    assert [m["name"] for m in doc["models"] if m["cached"]] == ["ffhq512-128"]
    assert cached_path("ffhq512-128").read_bytes() == data


def test_cli_models_download_errors_are_one_line():
    result = _invoke("--download", "ffhq512-12")
    assert result.exit_code == 1
    assert "did you mean 'ffhq512-128'" in result.output and "Traceback" not in result.output
