"""``eg3d-invert ... --engine ray`` (issue 11): the batch on a Ray cluster, held to the local engine.

One Ray instance serves the module, started as the issue asks (``ray.init(num_cpus=2,
num_gpus=0, include_dashboard=False)``); the engine uses a connection it finds and leaves it
open. Three portraits (scikit-image's astronaut, matplotlib's Grace Hopper, the astronaut
mirrored) and a truncated JPEG are inverted once per module by each engine, with tiny_A, 2
projection + 1 tuning steps, two views with depth and no video or mesh. In the Ray run the worker
of one photo is killed while it renders (the test hook ``EG3D_INVERT_TEST_CRASH``), so that
photo's outputs also show that a retry writes what an uninterrupted run writes. LPIPS reads
random weights from a temporary TORCH_HOME (:mod:`tests.lpips_weights`), which the driver passes
on to the workers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from eg3d_invert import ray_batch
from eg3d_invert.cli import _Display, app

from .conftest import REFERENCE, REPO, REQUIRE_ENV, require
from .lpips_weights import random_lpips_environment

try:
    import ray
    import ray.data  # noqa: F401
except ImportError:  # setup.sh installs the [ray] extra: CI must not pass without these tests
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        raise
    pytest.skip("Ray is not installed (pip install 'eg3d-invert[ray]')", allow_module_level=True)

TINY = REFERENCE / "tiny_A.pkl"
FAST = ["--network", TINY, "--device", "cpu", "--steps", "2", "--pti-steps", "1", "--views=-20,0:10", "--no-video",
        "--mesh", "none"]
RAY = ["--engine", "ray", "--workers", "2"]
GOOD = ["astronaut.png", "grace_hopper.jpg", "mirror.png"]
KILLED = "grace_hopper.jpg"  # its worker dies when its views begin (after its inversion was saved)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module", autouse=True)
def torch_home(tmp_path_factory):
    with random_lpips_environment(tmp_path_factory.getbasetemp() / "torch_home") as home:
        yield home


@pytest.fixture(scope="module")
def cluster(torch_home):
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import matplotlib.cbook
    import skimage.data

    require(TINY)
    root = tmp_path_factory.mktemp("photos")
    astronaut = skimage.data.astronaut()
    Image.fromarray(astronaut).save(root / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(root / "mirror.png")
    grace = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    grace.resize((341, 400)).save(root / "grace_hopper.jpg", quality=95)
    Image.fromarray(astronaut).save(root / "broken.jpg", quality=90)
    (root / "broken.jpg").write_bytes((root / "broken.jpg").read_bytes()[:3000])  # truncated JPEG
    return root


@pytest.fixture(scope="module")
def runs(photos, cluster, tmp_path_factory):
    """The same batch by the local engine and by Ray with two workers (one killed mid-photo)."""
    base = tmp_path_factory.mktemp("runs")
    t0 = time.perf_counter()
    local = invoke(photos, "--out", base / "local", *FAST, "--json")
    t1 = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ray_batch.CRASH_HOOK_ENV, f"{KILLED}:views")
        remote = invoke(photos, "--out", base / "ray", *FAST, *RAY, "--json")
    print(f"\nlocal engine {t1 - t0:.1f} s, ray engine (2 workers, one killed) {time.perf_counter() - t1:.1f} s")
    return {"local": (base / "local", local), "ray": (base / "ray", remote)}


def _by_name(doc):
    return {Path(p["source"]).name: p for p in doc["photos"]}


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the batch, by both engines ----------------------------------------------------------------------


def test_ray_engine_writes_what_the_local_engine_writes(runs):
    (local_out, local), (ray_out, remote) = runs["local"], runs["ray"]
    assert local.exit_code == 1 and remote.exit_code == 1, (local.output, remote.output)  # the broken photo
    a, b = json.loads(local.stdout), json.loads(remote.stdout)  # --json: stdout is one document
    assert "Traceback" not in remote.stderr
    for key in ("succeeded", "failed", "skipped", "interrupted", "not_processed"):
        assert a[key] == b[key], key
    assert (b["succeeded"], b["failed"], b["inverted"] + b["rendered"]) == (3, 1, 3)
    assert b["settings"]["engine"]["name"] == "ray" and b["settings"]["engine"]["workers"] == 2
    assert [p["source"] for p in b["photos"]] == [p["source"] for p in a["photos"]]  # input order in the summary
    assert json.loads((ray_out / "summary.json").read_text())["photos"] == b["photos"]
    la, lb = _by_name(a), _by_name(b)
    assert lb["broken.jpg"]["status"] == "failed" and lb["broken.jpg"]["error"] == la["broken.jpg"]["error"]
    assert lb["broken.jpg"]["attempts"] == 1  # a bad photo is an ordinary failure, never a retry
    assert sorted(p.name for p in ray_out.iterdir()) == sorted(p.name for p in local_out.iterdir())
    assert not [p for p in ray_out.rglob(".*")], "temporary files left behind"

    largest = 0
    for name in GOOD:
        folder = Path(name).stem
        ra, rb = (json.loads((out / folder / "report.json").read_text()) for out in (local_out, ray_out))
        assert set(rb["files"]) == set(ra["files"])  # the same layout, each file listed with its size
        assert {p.relative_to(ray_out / folder).as_posix() for p in (ray_out / folder).rglob("*") if p.is_file()} \
            == set(rb["files"]) | {"report.json"}
        assert rb["render"] == ra["render"]
        for key in ("settings", "photo", "source", "camera", "losses", "metrics", "faces"):
            assert rb[key] == ra[key], (name, key)
        images = ["reconstruction.png", "views.png", *[f for f in rb["files"] if f.startswith("views/")]]
        for rel in images:
            diff = int(np.abs(_pixels(ray_out / folder / rel) - _pixels(local_out / folder / rel)).max())
            largest = max(largest, diff)
        for rel in (f for f in rb["files"] if f.endswith(".npy")):
            np.testing.assert_array_equal(np.load(ray_out / folder / rel), np.load(local_out / folder / rel))
    print(f"\nlargest pixel difference, Ray vs local (reconstruction.png, views): {largest}")
    assert largest == 0


def test_a_killed_worker_is_retried(runs):
    ray_out, remote = runs["ray"]
    entry = _by_name(json.loads(remote.stdout))[KILLED]
    # The first attempt died when the views began; the second found the saved inversion and rendered.
    assert entry["status"] == "ok" and entry["attempts"] == 2 and entry["action"] == "rendered", entry
    assert all(p["attempts"] == 1 for n, p in _by_name(json.loads(remote.stdout)).items() if n != KILLED)
    stderr = " ".join(remote.stderr.split())
    assert f"{KILLED}: its worker crashed" in stderr and "this was attempt 2 of 3" in stderr
    report = json.loads((ray_out / "grace_hopper" / "report.json").read_text())
    assert report["render"] is not None and "views" in report["timings"]


def test_resume_skips_complete_photos_before_anything_is_scheduled(runs, photos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(runs["ray"][0], out)  # copy2: mtimes kept
    before = _mtimes(out)

    def never(*args, **kwargs):
        raise AssertionError("Ray was used for a batch whose photos are all complete")

    monkeypatch.setattr(ray_batch, "_connected", never)
    result = invoke(*(photos / n for n in GOOD), "--out", out, *FAST, *RAY, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [(p["status"], p["attempts"]) for p in doc["photos"]] == [("skipped", 0)] * 3
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if k != "summary.json"} == {k: v for k, v in before.items()
                                                                       if k != "summary.json"}


def test_resume_schedules_only_the_unfinished_photos(runs, photos, tmp_path, monkeypatch):
    """What reaches Ray Data: the broken photo alone (the others are complete). Ray Data is
    replaced by a stand-in that returns nothing, as if no worker had ever taken the photo."""
    out = tmp_path / "out"
    shutil.copytree(runs["ray"][0], out)
    scheduled = []

    def stand_in(ray_module, tasks, *args):
        scheduled.append([t.photo.name for t in tasks])
        return iter(())

    monkeypatch.setattr(ray_batch, "_run_round", stand_in)
    result = invoke(photos, "--out", out, *FAST, *RAY, "--json")
    assert result.exit_code == 1, result.output
    assert scheduled == [["broken.jpg"]]
    doc = _by_name(json.loads(result.stdout))
    assert [doc[n]["status"] for n in GOOD] == ["skipped"] * 3
    assert doc["broken.jpg"]["attempts"] == 0 and "not processed: no worker took it" in doc["broken.jpg"]["error"]


def test_a_photo_whose_worker_always_dies_is_recorded_as_failed(photos, cluster, tmp_path, monkeypatch):
    monkeypatch.setenv(ray_batch.CRASH_HOOK_ENV, "mirror.png:align")
    out = tmp_path / "out"
    result = invoke(photos / "mirror.png", "--out", out, *FAST, *RAY, "--retries", "0", "--json")
    assert result.exit_code == 1, result.output
    [entry] = json.loads(result.stdout)["photos"]
    assert entry["status"] == "failed" and entry["attempts"] == 1 and entry["stage"] == "worker"
    assert "its worker crashed on each of 1 attempt" in entry["error"]
    assert "its worker crashed on each of 1 attempt" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert not [p for p in out.rglob(".*")]


def test_ctrl_c_stops_the_cluster_work_and_leaves_nothing_half_written(photos, cluster, tmp_path, monkeypatch):
    """Ctrl-C arrives when the first photo is done and the second is in progress on the only worker."""
    real = _Display.__call__

    def interrupting(self, stage, done, total, info=""):
        real(self, stage, done, total, info)
        if stage == "photo" and done == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(_Display, "__call__", interrupting)
    out = tmp_path / "out"
    result = invoke(photos / "astronaut.png", photos / "mirror.png", "--out", out, *FAST, "--engine", "ray",
                    "--workers", "1", "--json")
    assert result.exit_code == 130, result.output
    doc = json.loads((out / "summary.json").read_text())
    assert doc["interrupted"] and len(doc["photos"]) == 1 and len(doc["not_processed"]) == 1
    unfinished = out / Path(doc["not_processed"][0]).stem
    assert not [p for p in out.rglob(".*")], "temporary files left behind"
    report = unfinished / "report.json"
    assert not report.exists() or json.loads(report.read_text())["render"] is None  # never "complete"
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)  # the worker is killed: its CPU comes back to the cluster
    assert ray.available_resources().get("CPU", 0) == 2


# --- usage -------------------------------------------------------------------------------------------


def test_engine_ray_without_ray_installed_is_one_line(photos, tmp_path):
    """In a process where ``import ray`` fails: the command line and the API each say what to install."""
    script = f"""
import sys
sys.modules["ray"] = None  # import ray -> ModuleNotFoundError, as without the package
from eg3d_invert.cli import main
try:
    main([{str(photos / "astronaut.png")!r}, "--out", {str(tmp_path / "out")!r}, "--engine", "ray"])
except SystemExit as exc:
    print("exit", exc.code)
from eg3d_invert.batch import run_batch
from eg3d_invert.errors import MissingDependencyError
try:
    run_batch(None, [], {str(tmp_path / "out")!r}, None, engine="ray")  # Ray is looked for first
except MissingDependencyError as exc:
    print("api", exc)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "COLUMNS": "200"})
    assert proc.stdout.splitlines()[0] == "exit 2", proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "pip install 'eg3d-invert[ray]'" in lines[0], lines
    assert proc.stdout.splitlines()[1].startswith("api ") and "pip install 'eg3d-invert[ray]'" in proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--workers", "2"], "--workers only applies with --engine ray"),
    (["--address", "auto", "--retries", "1"], "--address, --retries only apply with --engine ray"),
    (["--engine", "ray", "--cpus-per-worker", "0"], "--cpus-per-worker must be a number > 0"),
    (["--engine", "ray", "--workers", "3"], "3 workers of 1 CPU and 0 GPU do not fit the Ray cluster (2 CPUs, 0 GPUs)"),
    (["--engine", "ray", "--gpus-per-worker", "1"], "1 worker of 1 CPU and 1 GPU does not fit the Ray cluster"),
])
def test_ray_usage_errors_exit_2(photos, cluster, tmp_path, args, message):
    result = invoke(photos / "astronaut.png", "--out", tmp_path / "out", *FAST, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.output


def test_what_the_workers_cannot_rebuild_is_refused(tmp_path):
    from types import SimpleNamespace

    from eg3d_invert.errors import ConfigError

    with pytest.raises(ConfigError, match="Inverter made by Inverter.from_pretrained"):
        ray_batch.worker_recipe(SimpleNamespace(recipe=None))  # built from components
    with pytest.raises(ConfigError, match="prebuilt aligner"):
        ray_batch.worker_recipe(SimpleNamespace(recipe={"name_or_path": "x", "aligner": object()}))
    checkpoint = tmp_path / "g.pkl"
    checkpoint.write_bytes(b"")
    recipe = ray_batch.worker_recipe(SimpleNamespace(recipe={"name_or_path": os.path.relpath(checkpoint),
                                                             "base": "ffhq512-128", "device": "auto"}))
    assert recipe["name_or_path"] == str(checkpoint.resolve()) and recipe["base"] == "ffhq512-128"
    for bad in (dict(workers=0), dict(cpus_per_worker=0), dict(gpus_per_worker=-1), dict(retries=-1),
                dict(address="")):
        with pytest.raises(ConfigError):
            ray_batch.RayEngine(**bad)
    with pytest.raises(ConfigError, match="engine must be 'local', 'ray' or a RayEngine"):
        ray_batch.as_ray_engine("spark")
