"""The time estimate printed before a photo's work: measured unit costs, remembered photos, and
what the command line and its progress bars make of them (tiny_A; random LPIPS backbones)."""

from __future__ import annotations

import json

import pytest
import torch

from .conftest import REFERENCE, require
from eg3d_invert.api import Inverter
from eg3d_invert.estimate import STAGES, TimeEstimate, estimate_photo_time, format_duration, record_photo_time
from eg3d_invert.options import RenderOptions
from .lpips_weights import random_lpips_environment

OPTIONS = RenderOptions(yaws=(0.0, 30.0), pitches=(0.0, 0.0), frames=3, mesh_resolution=32)


@pytest.fixture(scope="module", autouse=True)
def torch_home(tmp_path_factory):
    with random_lpips_environment(tmp_path_factory.getbasetemp() / "torch_home") as home:
        yield home


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EG3D_INVERT_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "timing.json"


@pytest.fixture(scope="module")
def inverter():
    return Inverter.from_pretrained(require(REFERENCE / "tiny_A.pkl"), device="cpu", preset="fast", steps=30,
                                    pti_steps=10)


def test_probe_counts_every_stage_and_scales_with_the_steps(inverter, cache):
    rng = torch.get_rng_state()
    est = estimate_photo_time(inverter, OPTIONS)
    assert torch.equal(torch.get_rng_state(), rng)  # a run after the estimate is the same run
    assert est.source == "probe" and not cache.exists()  # probes are not remembered, finished photos are
    assert set(est.stages) == set(STAGES) and all(v > 0 for v in est.stages.values())
    assert est.per_step["project"] > 0 and est.per_step["tune"] > 0
    # twice the projection steps: about twice the projection (set-up aside)
    longer = Inverter(inverter.generator, inverter.aligner, projection=inverter.projection.replace(
        num_steps=60, coarse_steps=60), tuning=inverter.tuning, lpips=inverter.lpips)
    est2 = estimate_photo_time(longer, OPTIONS)
    assert est2.stages["project"] > 1.3 * est.stages["project"]
    # no renders asked for, none estimated
    bare = estimate_photo_time(inverter, None)
    assert set(bare.stages) == {"align", "project", "tune", "finalize"}


def test_finished_photo_is_the_next_estimate(inverter, cache, monkeypatch):
    import eg3d_invert.estimate as estimate

    monkeypatch.setattr(estimate, "_probe", lambda inv, opts: TimeEstimate({"align": 1.0}, {}, "probe"))
    timings = {"align": 0.3, "project": 60.0, "tune": 5.0, "finalize": 1.0, "views": 2.0, "video": 3.0,
               "mesh": 4.0, "depth": 0.1, "load": 9.0}
    record_photo_time(inverter, OPTIONS, timings, {"project": 30, "tune": 5})  # tuning stopped at step 5 of 10
    est = estimate_photo_time(inverter, OPTIONS)
    assert est.source == "last photo"
    assert est.stages["tune"] == pytest.approx(10.0)  # scaled to the whole schedule
    assert est.stages["project"] == 60.0 and "load" not in est.stages
    assert est.per_step == pytest.approx({"project": 2.0, "tune": 1.0})
    assert est.total == pytest.approx(sum(est.stages.values()))
    assert "from the last photo with these settings" in est.describe()
    # other settings, other render options: not the same photo's figure
    other = Inverter(inverter.generator, inverter.aligner, projection=inverter.projection,
                     tuning=inverter.tuning.replace(learning_rate=1e-3), lpips=inverter.lpips)
    assert estimate_photo_time(other, OPTIONS, use_cache=True).source == "probe"
    assert estimate_photo_time(inverter, RenderOptions(frames=4), use_cache=True).source == "probe"
    assert estimate_photo_time(inverter, OPTIONS, use_cache=False).source == "probe"
    # a damaged cache is ignored, never an error
    cache.write_text("{not json")
    assert estimate_photo_time(inverter, OPTIONS).source == "probe"
    record_photo_time(inverter, OPTIONS, timings, {"project": 30, "tune": 10})
    assert len(json.loads(cache.read_text())) == 1


def test_describe_and_durations():
    est = TimeEstimate({"align": 0.5, "project": 600.0, "tune": 900.0, "finalize": 2.0, "video": 300.0},
                       {"project": 3.0, "tune": 11.0})
    assert est.describe() == ("~30.0 min per photo (projection 10.0 min, tuning 15.0 min, outputs 5.0 min; "
                              "measured on this device just now)")
    assert [format_duration(s) for s in (12, 600, 9000)] == ["12 s", "10.0 min", "2.5 h"]


def test_progress_remaining_time_from_estimate_then_from_pace(monkeypatch):
    from eg3d_invert import cli

    clock = {"t": 100.0}
    monkeypatch.setattr(cli.time, "perf_counter", lambda: clock["t"])
    est = TimeEstimate({"project": 200.0, "tune": 110.0}, {"project": 2.0, "tune": 11.0})
    display = cli._Display("photos", True, est)
    assert display._stage_eta("tune", 0, 10) == "ETA 1:50"  # 10 steps x 11 s, from the estimate
    clock["t"] += 30.0  # a slow first step (one-off work) is not the pace
    assert display._stage_eta("tune", 1, 10) == "ETA 1:39"
    clock["t"] += 20.0  # the second step took 20 s: the pace now
    assert display._stage_eta("tune", 2, 10) == "ETA 2:40"
    assert display._stage_eta("tune", 10, 10) == ""
    assert display._batch_eta(0, 3).startswith("ETA ~")  # no photo done yet: from the estimate
    assert cli._clock(3725) == "1:02:05" and cli._clock(59) == "0:59"
