"""How long one photo will take on this device with these settings, said before the work starts.

An optimisation step costs the same whatever the photo (the generator's work does not depend on
the image or the weights), so the time of a photo is, stage by stage, a set-up cost plus steps x
seconds per step; the renders are views + video frames x one render, and the mesh a lattice
query. :func:`estimate_photo_time` measures those unit costs on the real generator, on this
device, with the real settings: two steps of each kind of projection and tuning step the
schedule uses (the first is the warm-up, the second is timed), two renders and a small density
lattice. On the full ffhq512-128 configuration on a 2-core CPU that costs about a minute,
so the figure is remembered: the next estimate for the same device, threads, generator and
settings reuses the last *finished photo's* actual stage times (:func:`record_photo_time`),
which are better than any probe.

The tuning figure assumes every step runs; PTI's LPIPS threshold may end it earlier.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ._io import atomic_path
from .options import RenderOptions

#: Stages in the order a photo goes through them (as in ``report.json``'s timings).
STAGES = ("align", "project", "tune", "finalize", "views", "depth", "video", "mesh")
#: Seconds allowed for detection + alignment (measured 0.2-0.3 s per photo; a constant is enough).
ALIGN_SECONDS = 0.5
#: Rough share of the mesh lattice the coarse-to-fine extraction evaluates at full resolution.
MESH_SPARSE_SHARE = 0.15
_CACHE_FILE = "timing.json"
_CACHE_VERSION = 1


@dataclass(frozen=True)
class TimeEstimate:
    """Expected seconds per stage of one photo.

    Attributes:
        stages: ``{stage: seconds}`` for :data:`STAGES` that will run.
        per_step: ``{'project': s, 'tune': s}``: mean seconds per step (what the progress bars'
            remaining times start from).
        source: ``'probe'`` (measured just now) or ``'last photo'`` (the last finished photo with
            the same device, threads, generator and settings).
    """

    stages: dict[str, float]
    per_step: dict[str, float] = field(default_factory=dict)
    source: str = "probe"

    @property
    def total(self) -> float:
        return float(sum(self.stages.values()))

    def describe(self) -> str:
        """One line: total and the three big parts."""
        out = sum(v for k, v in self.stages.items() if k in ("finalize", "views", "depth", "video", "mesh"))
        parts = [f"projection {format_duration(self.stages.get('project', 0.0))}",
                 f"tuning {format_duration(self.stages.get('tune', 0.0))}", f"outputs {format_duration(out)}"]
        how = "measured on this device just now" if self.source == "probe" else "from the last photo with these settings"
        return f"~{format_duration(self.total)} per photo ({', '.join(parts)}; {how})"


def format_duration(seconds: float) -> str:
    """``'45 s'``, ``'7.5 min'``, ``'2.1 h'``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _fingerprint(inverter, options: RenderOptions | None) -> str:
    G = inverter.generator
    arch = {"init_kwargs": getattr(G, "init_kwargs", None), "neural": int(G.neural_rendering_resolution),
            "rendering": getattr(G, "rendering_kwargs", None)}
    doc = {"v": _CACHE_VERSION, "device": str(inverter.device), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "arch": arch, "projection": inverter.projection.to_dict(),
           "tuning": inverter.tuning.to_dict(), "options": options.to_dict() if options is not None else None}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _cache_path() -> Path:
    from .pretrained.cache import cache_dir

    return cache_dir() / _CACHE_FILE


def _read_cache() -> dict[str, Any]:
    try:
        doc = json.loads(_cache_path().read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def record_photo_time(inverter, options: RenderOptions | None, timings: Mapping[str, float],
                      steps: Mapping[str, int] | None = None) -> None:
    """Remember a finished photo's stage times for the next :func:`estimate_photo_time`.

    ``steps``: the steps projection and tuning really ran (a tuning stopped early by its threshold
    is scaled up to the full schedule, since the next photo may not stop). Best effort: a cache
    that cannot be written is ignored (the estimate is a convenience).
    """
    stages = {k: float(v) for k, v in timings.items() if k in STAGES and math.isfinite(float(v))}
    for stage, settings in (("project", inverter.projection), ("tune", inverter.tuning)):
        done = (steps or {}).get(stage)
        if stage in stages and done and 0 < done < settings.num_steps:
            stages[stage] *= settings.num_steps / done
    if not {"project", "tune"} <= set(stages):
        return
    per_step = {"project": stages["project"] / inverter.projection.num_steps,
                "tune": stages["tune"] / inverter.tuning.num_steps}
    try:
        doc = _read_cache()
        doc[_fingerprint(inverter, options)] = {"stages": stages, "per_step": per_step, "time": time.time()}
        if len(doc) > 64:  # keep the newest entries only
            doc = dict(sorted(doc.items(), key=lambda kv: kv[1].get("time", 0))[-64:])
        path = _cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(doc, indent=1))
    except OSError:
        pass


def _stage_probe(run, kinds: list[tuple[str, int]]) -> tuple[float, dict[str, float]]:
    """Run ``run(kind_steps)`` for each kind; return (set-up seconds, {kind: seconds per step})."""
    setup, per_step = 0.0, {}
    for kind, _ in kinds:
        stamps: list[float] = []
        t0 = time.perf_counter()
        run(kind, stamps)
        if len(stamps) < 2:
            raise RuntimeError("the timing probe did not run two steps")
        step = stamps[1] - stamps[0]
        per_step[kind] = step
        setup = max(setup, stamps[0] - t0 - step)
    return max(setup, 0.0), per_step


def _probe(inverter, options: RenderOptions | None) -> TimeEstimate:
    from .inversion import Pivot, project, tune
    from .inversion._common import frontal_label
    from .render.lattice import dense_density
    from .render.mesh import plane_density
    from .render.scene import Scene
    from .render.views import render_views

    G, dev = inverter.generator, inverter.device
    proj, tun = inverter.projection, inverter.tuning
    label = frontal_label(G, dev)
    target = torch.zeros(1, 3, G.img_resolution, G.img_resolution, device=dev)

    def stopper(stamps):
        def cb(progress):
            if progress.step > 0:
                stamps.append(time.perf_counter())
            return len(stamps) >= 2
        return cb

    def kinds(s):
        out = []
        if s.coarse_steps:
            out.append(("coarse", s.coarse_steps))
        if s.num_steps > s.coarse_steps:
            out.append(("full", s.num_steps - s.coarse_steps))
        return out

    p_kinds, t_kinds = kinds(proj), kinds(tun)

    def run_project(kind, stamps):
        s = proj.replace(num_steps=2, coarse_steps=2 if kind == "coarse" else 0)
        project(G, target, label, settings=s, lpips_model=inverter.lpips[proj.lpips_net], callback=stopper(stamps))

    ws = G.w_avg.reshape(1, 1, -1).expand(1, G.num_ws, -1).clone().to(dev)
    pivot = Pivot(ws=ws, camera=label.cpu())

    def run_tune(kind, stamps):
        s = tun.replace(num_steps=2, coarse_steps=2 if kind == "coarse" else 0, lpips_threshold=0.0)
        tune(G, pivot, target, settings=s, lpips_model=inverter.lpips[tun.lpips_net], callback=stopper(stamps))

    p_setup, p_step = _stage_probe(run_project, p_kinds)
    t_setup, t_step = _stage_probe(run_tune, t_kinds)
    stages = {"align": ALIGN_SECONDS,
              "project": p_setup + sum(p_step[k] * n for k, n in p_kinds),
              "tune": t_setup + sum(t_step[k] * n for k, n in t_kinds)}

    scene = Scene.from_ws(G, ws)

    def one_render(mult):
        render_views(scene, 0.0, 0.0, sample_mult=mult, deterministic=True, batch_size=1)  # warm-up
        t0 = time.perf_counter()
        render_views(scene, 0.0, 0.0, sample_mult=mult, deterministic=True, batch_size=1)
        return time.perf_counter() - t0

    view = one_render(options.sample_mult if options is not None else tun.sample_mult)
    # finalize = one render at the tuning's depth sampling + LPIPS + identity (~0.3 s); the
    # render's cost is taken as proportional to the depth samples (what dominates it)
    mult = options.sample_mult if options is not None else tun.sample_mult
    stages["finalize"] = view * tun.sample_mult / mult + 0.3
    if options is not None:
        if options.yaws:
            stages["views"] = view * len(options.yaws) + 0.2 * (len(options.yaws) + 1)  # + identity per view
            if options.depth:
                stages["depth"] = 0.05 * len(options.yaws)
        if options.video:
            stages["video"] = view * options.frames
        if options.mesh_formats:
            n = 32
            density = plane_density(scene)
            t0 = time.perf_counter()
            dense_density(density, n, scene.box_warp)
            per_point = (time.perf_counter() - t0) / n ** 3
            stages["mesh"] = per_point * options.mesh_resolution ** 3 * MESH_SPARSE_SHARE + 1.0
    steps_total = {"project": proj.num_steps, "tune": tun.num_steps}
    per_step = {k: (stages[k] / steps_total[k]) for k in steps_total}
    return TimeEstimate({k: stages[k] for k in STAGES if k in stages}, per_step, "probe")


def estimate_photo_time(inverter, options: RenderOptions | None = None, *, use_cache: bool = True) -> TimeEstimate:
    """Expected seconds per stage of one photo through ``inverter`` (and ``options``' renders).

    Uses the last finished photo with identical device, threads, generator and settings when
    one was recorded (and ``use_cache``), else measures the unit costs now (module docstring).
    Leaves no trace on the inverter: the probes use their own copies and seeds.
    """
    if use_cache:
        hit = _read_cache().get(_fingerprint(inverter, options))
        if isinstance(hit, dict) and isinstance(hit.get("stages"), dict):
            try:
                stages = {k: float(v) for k, v in hit["stages"].items() if k in STAGES}
                per_step = {k: float(v) for k, v in (hit.get("per_step") or {}).items()}
                return TimeEstimate(stages, per_step, "last photo")
            except (TypeError, ValueError):
                pass
    with torch.random.fork_rng(devices=[]):  # the probe must not move the global RNG a real run may use
        return _probe(inverter, options)


__all__ = ["TimeEstimate", "estimate_photo_time", "record_photo_time", "format_duration", "STAGES"]
