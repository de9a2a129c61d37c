"""Every script in examples/ runs, as a script, with the tiny_A checkpoint, so the examples never rot.

The three scripts run one after the other in one fresh Python process (a small driver executes
each with ``runpy.run_path(..., run_name="__main__")`` and its own ``sys.argv``, recording its
exit code and output): the ~15 s a process spends importing torch and building the face and
LPIPS models on a busy CPU is then paid once, not three times. Few steps and small renders keep
the work to seconds. LPIPS reads random weights under torchvision's file names from a temporary
TORCH_HOME (:mod:`tests.lpips_weights`), so no download is attempted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from .conftest import REFERENCE, REPO, require
from .lpips_weights import write_random_backbones

EXAMPLES = REPO / "examples"
STEPS = ["--steps", "1", "--pti-steps", "1"]  # plumbing only: the API and CLI tests check the optimisation
SMALL = ["--frames", "3", "--mesh-res", "32", "--mesh-level", "4"]

DRIVER = """
import contextlib, io, json, runpy, sys, traceback
runs, results = json.loads(open(sys.argv[1]).read()), {}
for name, argv in runs:
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [argv[0], *argv[1:]]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = "exception"
    results[name] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import matplotlib.cbook
    import skimage.data

    root = tmp_path_factory.mktemp("portraits")
    Image.fromarray(skimage.data.astronaut()).save(root / "astronaut.png")
    shutil.copy(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), root / "grace.jpg")
    Image.new("RGB", (240, 180), (90, 140, 200)).save(root / "sky.png")  # no face
    folder = root / "folder"
    (folder / "more").mkdir(parents=True)
    shutil.copy(root / "astronaut.png", folder / "more" / "astronaut.PNG")
    shutil.copy(root / "sky.png", folder / "sky.png")
    return root


@pytest.fixture(scope="module")
def runs(photos, tmp_path_factory):
    """Run the three examples in one fresh process; ``{name: {code, stdout, stderr}}`` and the out folder."""
    home = write_random_backbones(tmp_path_factory.getbasetemp() / "torch_home")
    out = tmp_path_factory.mktemp("examples_out")
    network = ["--network", str(require(REFERENCE / "tiny_A.pkl"))]
    plan = [
        ("single_photo", [EXAMPLES / "single_photo.py", photos / "astronaut.png", "--out", out / "head", *STEPS,
                          *SMALL, *network]),
        ("batch_folder", [EXAMPLES / "batch_folder.py", photos / "folder", "--out", out / "heads", *STEPS, *SMALL,
                          *network]),
        ("app_service", [EXAMPLES / "app_service.py", photos / "astronaut.png", photos / "sky.png",
                         photos / "grace.jpg", "--out", out / "app", *STEPS, *network]),
    ]
    spec = out / "plan.json"
    spec.write_text(json.dumps([[name, [str(a) for a in argv]] for name, argv in plan]))
    env = {**os.environ, "TORCH_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(spec)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), out


def test_examples_are_documented_scripts():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == ["app_service.py", "batch_folder.py", "single_photo.py"]
    for name in scripts:
        text = (EXAMPLES / name).read_text()
        assert text.startswith('"""') and 'if __name__ == "__main__":' in text and "--network" in text


def test_single_photo(runs):
    results, out = runs
    r = results["single_photo"]
    assert r["code"] == 0, r["stderr"]
    for name in ("views.png", "left_from_above.png", "orbit.mp4", "head.glb", "result/report.json"):
        assert (out / "head" / name).stat().st_size > 0, name
    assert "inverted" in r["stdout"]


def test_batch_folder(runs):
    results, out = runs
    r = results["batch_folder"]
    assert r["code"] == 1, r["stderr"] + r["stdout"]  # sky.png has no face
    doc = json.loads((out / "heads" / "summary.json").read_text())
    assert (doc["succeeded"], doc["failed"]) == (1, 1)
    assert {"mesh.glb", "orbit.mp4", "views.png", "report.json"} <= {p.name for p in (out / "heads" / "astronaut").iterdir()}
    assert "no face" in r["stdout"]


def test_app_service(runs):
    results, out = runs
    r = results["app_service"]
    assert r["code"] == 0, r["stderr"]
    assert "rejected" in r["stdout"]  # the photo without a face, while the service goes on
    for photo_id in ("photo0", "photo2"):
        for yaw in ("-25", "+0", "+25"):
            assert Image.open(out / "app" / f"{photo_id}_yaw{yaw}.png").size == (128, 128)
        assert (out / "app" / photo_id / "report.json").is_file()
