"""Fixtures of the viewer tests (issue 10): two real result folders on tiny_A and a running viewer.

The results are made once per test session with the public API, the way users make them:
``Inverter.from_pretrained(tiny_A)`` (2 projection + 1 tuning steps, random LPIPS backbones from
:mod:`tests.lpips_weights`), ``invert`` of two photos that ship with scikit-image / matplotlib,
``result.save(folder)``, and a ``mesh.glb`` for one of them. The viewer serves copies of them
(tests that Save write into the copies), with its SeFa cache in a temporary folder.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from ..conftest import REFERENCE, require
from ..lpips_weights import random_lpips_environment

TINY = REFERENCE / "tiny_A.pkl"
#: tiny_A's density barely reaches the official iso-level 10 (see tests/test_api.py).
MESH_LEVEL = 4.0


@pytest.fixture(scope="session")
def made_results(tmp_path_factory) -> Path:
    """``ROOT/astronaut`` (with mesh.glb) and ``ROOT/grace``: inversions of two real photos."""
    import matplotlib.cbook
    import PIL.Image
    import skimage.data

    from eg3d_invert import Inverter
    from eg3d_invert.render import save_mesh

    root = tmp_path_factory.mktemp("viewer_results")
    photos = {"astronaut": skimage.data.astronaut(),
              "grace": PIL.Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}
    with random_lpips_environment(tmp_path_factory.getbasetemp() / "torch_home"):
        inverter = Inverter.from_pretrained(require(TINY), device="cpu", steps=2, pti_steps=1,
                                            projection_lpips="alex")
        for name, photo in photos.items():
            result = inverter.invert(photo, name=name)
            result.save(root / name)
            if name == "astronaut":
                save_mesh(result.mesh(resolution=32, level=MESH_LEVEL), root / name / "mesh.glb")
    return root


@pytest.fixture(scope="session")
def result_dirs(made_results, tmp_path_factory) -> dict[str, Path]:
    """Copies of the made results that the viewer serves (Save writes into them)."""
    root = tmp_path_factory.mktemp("served")
    return {name: Path(shutil.copytree(made_results / name, root / name)) for name in ("astronaut", "grace")}


@pytest.fixture(scope="session")
def sefa_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sefa_cache")


@pytest.fixture(scope="session")
def server(result_dirs, sefa_cache):
    """The viewer of both results on 127.0.0.1, any free port."""
    from eg3d_invert.viewer import serve

    running = serve([result_dirs["astronaut"], result_dirs["grace"]], port=0, device="cpu", sefa_cache=sefa_cache)
    yield running
    running.stop()


def tree_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
