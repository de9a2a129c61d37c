"""The batch on a Ray cluster: ``run_batch(..., engine="ray")`` and ``eg3d-invert ... --engine ray``.

The work per photo is the local engine's, :func:`eg3d_invert.batch.invert_photo` (invert, write
the renders, write ``report.json`` last), so a folder a Ray worker writes is the folder the local
engine writes. Ray only decides where it runs: Ray Data ``map_batches`` over the photos with a
pool of actors (:class:`ray.data.ActorPoolStrategy`, ``batch_size=1``), each actor holding one
:class:`~eg3d_invert.api.Inverter` (generator, face models, LPIPS) built once from the
arguments that built the driver's (:attr:`Inverter.recipe <eg3d_invert.api.Inverter.recipe>`).
No scheduling of our own: Ray places the actors and feeds them.

The driver (the process that calls :func:`run_ray_batch`) keeps the local batch's promises:

* **resume**: photos whose folders are complete are skipped here, before anything is scheduled;
* **a bad photo** (unreadable, no face) is an ordinary failed outcome that its worker returns;
* **a worker that dies** (killed, out of memory, a native crash) costs only its photo: Ray
  restarts the actor (``max_restarts=-1``: its models are loaded again) and tries the photo again
  on it, at most ``retries`` more times (``max_task_retries``); then the photo's block is passed
  over (``max_errored_blocks=-1``) and the driver records the photo as failed. The workers count
  each photo's attempts in a small Ray actor (Ray does not tell a retried call that it is one),
  so every outcome says how many it took;
* **Ctrl-C** ends the dataset (its actors are killed), shuts down a Ray instance the run started,
  and removes the temporary files of the photos in progress. Every file being written atomically
  and ``report.json`` last, nothing half-written remains, and the next run resumes.

Workers write into the output folder themselves, so it must have the same path on every node (a
shared file system); photos and checkpoints too. ``TORCH_HOME`` and the ``EG3D_INVERT_*``
variables of the driver are passed to the workers, so they read the same LPIPS weights and
checkpoint cache.

Ray is an optional dependency (``pip install 'eg3d-invert[ray]'``), imported only when this
engine runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ._io import ensure_writable_dir, remove_temporaries
from .errors import ClusterError, ConfigError, Eg3dInvertError, MissingDependencyError, failure_message, one_line

if TYPE_CHECKING:
    from .api import Inverter
    from .batch import BatchNotice, BatchProgress, PhotoOutcome
    from .options import RenderOptions

#: What to install for this engine (named by every error about a missing Ray).
RAY_INSTALL = "pip install 'eg3d-invert[ray]'"
#: Test hook, read by the workers: ``NAME:STAGE`` makes the worker processing the photo named
#: ``NAME`` exit at once (``os._exit``, as a killed process) when that photo's ``STAGE``
#: (``align``, ``project``, ``tune``, ``views``, ...) begins, on its first attempt only. It kills
#: nothing but the worker itself and does nothing unless set; the tests use it to check retries.
CRASH_HOOK_ENV = "EG3D_INVERT_TEST_CRASH"


class WorkerError(Eg3dInvertError):
    """A photo's failure on a Ray worker, for ``--debug``: its message is the worker's traceback
    (exceptions themselves do not always survive the trip back)."""


def import_ray():
    """Import Ray (and Ray Data); a missing or broken install is a one-line error naming the fix.

    Raises:
        MissingDependencyError
    """
    try:
        import ray
        import ray.data  # noqa: F401 - the engine is Ray Data's; fail here, not half-way
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("ray", "pyarrow", "pandas"):
            raise MissingDependencyError(f"the ray engine cannot import Ray ({one_line(exc)}); "
                                         f"reinstall it: {RAY_INSTALL}") from None
        raise MissingDependencyError(f"the ray engine needs Ray, which is not installed: {RAY_INSTALL}") from None
    except ImportError as exc:  # installed but broken (e.g. a pyarrow built for another numpy)
        raise MissingDependencyError(f"the ray engine cannot import Ray ({one_line(exc)}); "
                                     f"reinstall it: {RAY_INSTALL}") from None
    return ray


@dataclass(frozen=True)
class RayEngine:
    """Where and how a batch runs on Ray (``run_batch(..., engine=RayEngine(...))``).

    Attributes:
        address: the cluster to join: ``'auto'`` (the one ``ray start --head`` started on this
            machine, or ``$RAY_ADDRESS``), ``'HOST:6379'``, or ``'ray://HOST:10001'`` (Ray
            Client); None starts a local Ray instance on this machine (all its CPUs and GPUs)
            for the run and stops it afterwards. A process already connected to Ray
            (``ray.init`` called before) uses that connection and keeps it.
        workers: actors in the pool (default: as many as the cluster fits, e.g. one per GPU);
            never more than there are photos to do.
        gpus_per_worker: GPUs reserved per worker (default: 1 if the cluster has GPUs, else 0).
        cpus_per_worker: CPUs reserved per worker, also its torch thread count (rounded down).
        retries: how many more times a photo whose worker crashed is tried (then it is failed).
        device: the workers' torch device (default: the one the Inverter was asked for;
            ``'auto'`` means CPU for a worker that reserved no GPU, so that workers never share
            a GPU Ray did not give them).
        verbose: let Ray's own log lines and worker-death reports through (``--debug``).
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    retries: int = 2
    device: str | None = None
    verbose: bool = False

    def __post_init__(self):
        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ConfigError(f"address must be 'auto', HOST:PORT or ray://HOST:PORT, got {self.address!r}")
        if self.workers is not None and not (isinstance(self.workers, int) and not isinstance(self.workers, bool)
                                             and self.workers >= 1):
            raise ConfigError(f"workers must be a whole number >= 1, got {self.workers!r}")
        if self.gpus_per_worker is not None and not (number(self.gpus_per_worker) and self.gpus_per_worker >= 0):
            raise ConfigError(f"gpus_per_worker must be a number >= 0, got {self.gpus_per_worker!r}")
        if not (number(self.cpus_per_worker) and self.cpus_per_worker > 0):
            raise ConfigError(f"cpus_per_worker must be a number > 0, got {self.cpus_per_worker!r}")
        if not (isinstance(self.retries, int) and not isinstance(self.retries, bool) and self.retries >= 0):
            raise ConfigError(f"retries must be a whole number >= 0, got {self.retries!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": "ray", **asdict(self)}


def as_ray_engine(engine) -> RayEngine:
    """``'ray'`` or a :class:`RayEngine` -> a :class:`RayEngine`; anything else is a ConfigError."""
    if isinstance(engine, RayEngine):
        return engine
    if isinstance(engine, str) and engine == "ray":
        return RayEngine()
    raise ConfigError(f"engine must be 'local', 'ray' or a RayEngine, got {engine!r}")


def worker_recipe(inverter: "Inverter") -> dict[str, Any]:
    """The :meth:`Inverter.from_pretrained <eg3d_invert.api.Inverter.from_pretrained>` arguments a
    worker builds its own Inverter from, with file paths made absolute (a worker's current
    folder need not be the driver's).

    Raises:
        ConfigError: the Inverter was not built by ``from_pretrained``, or from objects that
            cannot be sent to another process (a prebuilt aligner, LPIPS models or base generator).
    """
    recipe = inverter.recipe
    if recipe is None:
        raise ConfigError("the ray engine needs an Inverter made by Inverter.from_pretrained: each worker builds "
                          "its own from the same arguments")
    recipe = dict(recipe)
    for name in ("aligner", "lpips"):
        if recipe.get(name) is not None:
            raise ConfigError(f"the ray engine cannot send a prebuilt {name} to its workers; give its settings to "
                              f"Inverter.from_pretrained instead")
    for name in ("name_or_path", "base"):
        value = recipe.get(name)
        if value is None:
            continue
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"the ray engine needs {name} as a path or registry name, got {type(value).__name__}")
        if Path(value).exists():
            recipe[name] = str(Path(value).resolve())
        else:
            recipe[name] = os.fspath(value)
    recipe["device"] = str(recipe.get("device", "auto"))
    return recipe


# --- the workers ------------------------------------------------------------------------------------


class _PhotoWorker:
    """One actor of the pool: an Inverter built once, then one photo per call.

    A failure to build it (a checkpoint missing on this node, a device it lacks) is not raised:
    Ray would restart the actor over and over. It is reported as each photo's failure instead.
    """

    def __init__(self, recipe: dict[str, Any], options: "RenderOptions", face_index: int, resume: bool,
                 env: dict[str, str], cwd: str, threads: int, ledger, attempts: int):
        import torch

        os.environ.update(env)
        self.in_driver_cwd = False
        with contextlib.suppress(OSError):
            os.chdir(cwd)  # relative photo paths then read as on the driver (and reports say the same)
            self.in_driver_cwd = True
        torch.set_num_threads(threads)
        self.options, self.face_index, self.resume = options, face_index, resume
        self.ledger, self.attempts = ledger, attempts
        hook = os.environ.get(CRASH_HOOK_ENV, "")
        self.crash_at = tuple(hook.rsplit(":", 1)) if ":" in hook else None
        self.inverter, self.setup_error = None, None
        try:
            from .api import Inverter

            self.inverter = Inverter.from_pretrained(**recipe)
        except Exception as exc:  # noqa: BLE001 - reported with every photo (see the class docstring)
            self.setup_error = exc

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        results = [json.dumps(self._one(int(index), str(photo), str(absolute), str(directory)), default=str)
                   for index, photo, absolute, directory
                   in zip(batch["index"], batch["photo"], batch["absolute"], batch["directory"])]
        return {"index": np.asarray(batch["index"], dtype=np.int64), "result": np.asarray(results, dtype=object)}

    def _one(self, index: int, photo: str, absolute: str, directory: str) -> dict[str, Any]:
        import ray

        from .batch import PhotoOutcome, invert_photo

        attempt = ray.get(self.ledger.start.remote(index))
        path, folder = Path(photo if self.in_driver_cwd else absolute), Path(directory)
        notices: list[tuple[str, str]] = []
        if attempt > 1:
            notices.append(("warning", f"{path}: its worker crashed (process killed, out of memory or a native "
                                       f"crash); this was attempt {attempt} of {self.attempts}"))

        def progress(stage: str, done: int, total: int | None, info: str = "") -> None:
            if self.crash_at == (path.name, stage) and attempt == 1:
                os._exit(70)  # the test hook (CRASH_HOOK_ENV): die as a killed process would

        if attempt > self.attempts:  # Ray retries some deaths (out of memory) beyond max_task_retries
            outcome = PhotoOutcome(path, folder.name, folder, stage="worker",
                                   error=f"{path}: its worker crashed on each of {self.attempts} attempts (process "
                                         f"killed, out of memory or a native crash; Ray's logs say which)")
        elif self.setup_error is not None:
            outcome = PhotoOutcome(path, folder.name, folder, stage="worker setup",
                                   error=failure_message(self.setup_error, path, "worker setup"),
                                   exception=self.setup_error)
        else:
            outcome = invert_photo(self.inverter, path, folder, self.options, face_index=self.face_index,
                                   resume=self.resume, progress=progress,
                                   notice=lambda level, message: notices.append((level, message)))
        exc = outcome.exception
        return {"status": outcome.status, "action": outcome.action, "stage": outcome.stage, "error": outcome.error,
                "report": outcome.report, "seconds": outcome.seconds, "notices": notices,
                "attempt": min(attempt, self.attempts),
                "traceback": "".join(traceback.format_exception(exc)) if exc is not None else None}


# --- the driver -------------------------------------------------------------------------------------------


@dataclass
class _Task:
    index: int
    photo: Path
    directory: Path


def run_ray_batch(inverter: "Inverter", photos: Sequence[Path], out: os.PathLike | str, options: "RenderOptions", *,
                  engine: RayEngine | None = None, face_index: int = 0, resume: bool = True,
                  progress: "BatchProgress | None" = None,
                  notice: "BatchNotice | None" = None) -> Iterator["PhotoOutcome"]:
    """:func:`eg3d_invert.batch.run_batch` on Ray: same folders, same outcomes, yielded as photos
    finish (skipped ones first). ``inverter`` is the driver's copy: it decides which folders are
    complete (and so what is scheduled); the workers build their own from its recipe.

    Raises (at the call, before anything runs):
        MissingDependencyError: Ray is not installed.
        ConfigError: an Inverter the workers cannot rebuild.
    Raises (while iterating):
        OutputError: ``out`` cannot be written (checked before the first photo).
        ClusterError: the cluster cannot be reached.
        ConfigError: the workers asked for do not fit the cluster.
    """
    ray = import_ray()
    engine = engine if engine is not None else RayEngine()
    recipe = worker_recipe(inverter)
    return _run(ray, inverter, recipe, list(photos), out, options, engine, face_index, resume, progress, notice)


def _run(ray, inverter, recipe, photos, out, options, engine, face_index, resume, progress, notice):
    """The generator behind :func:`run_ray_batch`: resume filtering here, then one Ray Data pass
    over the rest; Ray is joined (or started) only if something is left to do."""
    from .batch import PhotoOutcome, plan_names, resume_status, skipped_outcome

    out = ensure_writable_dir(out)
    remove_temporaries(out, recursive=False)  # e.g. a summary a killed run was writing
    names = plan_names(photos, out)
    done = 0

    def finished(outcome: PhotoOutcome) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress("photo", done, len(photos), str(outcome.source))

    if progress is not None:
        progress("photo", 0, len(photos), "")
    todo: list[_Task] = []
    for index, (photo, name) in enumerate(zip(photos, names)):
        task = _Task(index, Path(photo), Path(out) / name)
        status = "stale"
        if resume:
            with contextlib.suppress(Exception):  # whatever is wrong, the worker finds and reports it
                status = resume_status(inverter, task.photo, task.directory, options, face_index=face_index)
        if status == "complete":
            outcome = skipped_outcome(task.photo, task.directory)
            yield outcome
            finished(outcome)  # after the yield: an interrupt here loses no outcome
        else:
            todo.append(task)
    if not todo:
        return

    unfinished = {t.index: t for t in todo}
    attempts = engine.retries + 1
    try:
        with _connected(ray, engine), _quiet(ray, engine.verbose):
            size, gpus = _pool_size(ray, engine, len(todo))
            ledger = ray.remote(num_cpus=0)(_AttemptLedger).remote()
            try:
                env = {k: v for k, v in os.environ.items() if k == "TORCH_HOME" or k.startswith("EG3D_INVERT_")}
                worker_args = {"recipe": {**recipe, "device": _worker_device(engine.device or recipe["device"], gpus)},
                               "options": options, "face_index": face_index, "resume": resume, "env": env,
                               "cwd": os.getcwd(), "threads": max(1, int(engine.cpus_per_worker)),
                               "ledger": ledger, "attempts": attempts}
                if progress is not None:
                    progress("ray", 0, None, f"starting {size} worker{'s' * (size > 1)}")
                for index, result in _run_round(ray, todo, size, gpus, engine, worker_args):
                    task = unfinished.pop(index)
                    for level, message in result["notices"]:
                        if notice is not None:
                            notice(level, message)
                    outcome = _outcome(task, result, PhotoOutcome)
                    yield outcome
                    finished(outcome)
                # What did not come back lost its worker on every attempt Ray made.
                counts = ray.get(ledger.counts.remote()) if unfinished else {}
            finally:
                with contextlib.suppress(Exception):
                    ray.kill(ledger)
            for task in list(unfinished.values()):
                n = counts.get(task.index, 0)
                remove_temporaries(task.directory)
                error = (f"{task.photo}: its worker crashed on each of {n} attempt{'s' * (n != 1)} (process killed, "
                         f"out of memory or a native crash; Ray's logs say which)" if n else
                         f"{task.photo}: not processed: no worker took it (Ray's logs say why)")
                del unfinished[task.index]
                outcome = PhotoOutcome(task.photo, task.directory.name, task.directory, stage="worker", error=error,
                                       attempts=n)
                yield outcome
                finished(outcome)
    finally:
        # Interrupted (or the cluster failed): the workers are gone (or going); what they were
        # writing is only temporary files, which go now (else the next run removes them).
        for task in unfinished.values():
            with contextlib.suppress(OSError):
                remove_temporaries(task.directory)


class _AttemptLedger:
    """How many times each photo has been started, kept by one small Ray actor per run: Ray
    retries a call whose worker died without telling the worker that it is a retry."""

    def __init__(self):
        self._counts: dict[int, int] = {}

    def start(self, index: int) -> int:
        self._counts[index] = self._counts.get(index, 0) + 1
        return self._counts[index]

    def counts(self) -> dict[int, int]:
        return dict(self._counts)


def _outcome(task: _Task, result: dict[str, Any], PhotoOutcome) -> "PhotoOutcome":
    """A worker's result as the driver's :class:`~eg3d_invert.batch.PhotoOutcome` (paths as the
    caller gave them)."""
    outcome = PhotoOutcome(task.photo, task.directory.name, task.directory, status=result["status"],
                           action=result["action"], stage=result["stage"], error=result["error"],
                           report=result["report"], seconds=float(result["seconds"] or 0.0),
                           attempts=0 if result["status"] == "skipped" else int(result["attempt"]))
    if result["traceback"]:
        outcome.exception = WorkerError(result["traceback"].rstrip())
    return outcome


def _run_round(ray, tasks: list[_Task], size: int, gpus: float, engine: RayEngine,
               worker_args: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Ray Data over ``tasks``: yields ``(index, result)`` for each photo as its worker returns
    it; a photo whose worker died on every attempt is left out."""
    from ray.data import ActorPoolStrategy

    items = [{"index": t.index, "photo": str(t.photo), "absolute": str(t.photo.absolute()),
              "directory": str(t.directory.absolute())} for t in tasks]
    with warnings.catch_warnings():
        # Ray's own deprecations, not the user's business: max_restarts / max_task_retries have no
        # named parameter in the pinned Ray (2.60) yet, and copying a DataContext touches
        # deprecated settings.
        warnings.simplefilter("ignore", DeprecationWarning)
        # One photo per block: a crash then concerns that photo alone.
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(_PhotoWorker, batch_size=1, batch_format="numpy", fn_constructor_kwargs=worker_args,
                            # One photo in flight per actor: a crash costs no queued photo, and a
                            # photo waits for the first free worker rather than behind a busy one.
                            compute=ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1),
                            num_cpus=engine.cpus_per_worker, num_gpus=gpus,
                            # A dead worker is restarted (its models reloaded) and its photo tried
                            # again on it, at most `retries` times.
                            max_restarts=-1, max_task_retries=engine.retries)
        ctx = ds.context
        ctx.max_errored_blocks = -1  # a photo whose retries ran out is missing from the output, not fatal
        ctx.enable_progress_bars = False  # ours counts photos
        ctx.print_on_execution_start = False
    # No prefetching: with it, each result waits for the next one to be ready (seconds to minutes).
    batches = iter(ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0))
    try:
        for batch in batches:
            for index, result in zip(batch["index"], batch["result"]):
                yield int(index), json.loads(result)
    except Exception as exc:  # noqa: BLE001 - Ray's errors are many and multi-line: one line, and a hint
        cause = _last_line(exc)
        hint = ("every node needs the same eg3d-invert installed" if "No module named" in cause
                else "Ray's logs have the details")
        raise ClusterError(f"the Ray run failed: {cause} ({hint})") from exc
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # now, not when collected: ends the execution and kills its actors (Ctrl-C, early exit)


def _last_line(exc: BaseException) -> str:
    """The last non-blank line of a (Ray) error message: the innermost cause, e.g.
    ``ModuleNotFoundError: No module named 'eg3d_invert'`` for a node without the package."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _pool_size(ray, engine: RayEngine, photos: int) -> tuple[int, float]:
    """``(workers, GPUs per worker)`` for the cluster as it is now.

    Raises:
        ConfigError: the workers asked for (or a single one) do not fit.
    """
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    per_gpu = engine.gpus_per_worker if engine.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
    fit = int(cpus // engine.cpus_per_worker + 1e-9)
    if per_gpu > 0:
        fit = min(fit, int(gpus // per_gpu + 1e-9))
    workers = engine.workers if engine.workers is not None else fit
    if fit < 1 or workers > fit:
        n = max(1, workers)
        raise ConfigError(f"{n} worker{'s' * (n > 1)} of {engine.cpus_per_worker:g} CPU and {per_gpu:g} GPU "
                          f"{'do' if n > 1 else 'does'} not fit the Ray cluster ({cpus:g} CPUs, {gpus:g} GPUs)")
    return max(1, min(workers, photos)), per_gpu


def _worker_device(device: str, gpus: float) -> str:
    return "cpu" if device == "auto" and gpus == 0 else device


@contextlib.contextmanager
def _connected(ray, engine: RayEngine) -> Iterator[None]:
    """Connected to Ray for the block: the caller's connection if there is one (left open),
    else a new one, closed after (which stops a local instance started here, and with it every
    worker of the run)."""
    if ray.is_initialized():
        yield
        return
    if engine.address is not None:
        _probe(engine.address)
    kwargs: dict[str, Any] = {"logging_level": logging.INFO if engine.verbose else logging.ERROR,
                              "log_to_driver": engine.verbose}
    if engine.address is None:
        kwargs["include_dashboard"] = False  # a private instance for one run
    try:
        ray.init(address=engine.address, **kwargs)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError ... from ray.init
        where = f"the Ray cluster at {engine.address}" if engine.address else "a local Ray instance"
        raise ClusterError(f"cannot start or reach {where}: {one_line(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _probe(address: str, timeout: float = 10.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a ``HOST:PORT`` address (``ray.init``
    keeps retrying an unreachable cluster for many minutes before it gives up).

    Raises:
        ClusterError
    """
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # 'auto' and the like: ray.init looks them up (and fails fast itself)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} (is `ray start "
                           f"--head` running there, and is the port open?)") from None


@contextlib.contextmanager
def _quiet(ray, verbose: bool) -> Iterator[None]:
    """Keep Ray's own chatter off the terminal while the run lasts, unless ``verbose``: Ray Data's
    console log lines, and the worker logs and worker-death reports Ray prints on the driver's
    stdout (which would break ``--json``). Failures reach the user as our one-line errors and
    warnings; Ray's log files keep everything."""
    if verbose:
        yield
        return
    console = [h for h in logging.getLogger("ray.data").handlers
               if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in console]
    worker_module = getattr(getattr(ray, "_private", None), "worker", None)
    printing = getattr(worker_module, "_worker_logs_enabled", None)
    try:
        for h in console:
            h.setLevel(logging.CRITICAL + 1)
        if printing is not None:
            worker_module._worker_logs_enabled = False  # the switch Ray's own debugger uses
        yield
    finally:
        for h, level in zip(console, levels):
            h.setLevel(level)
        if printing is not None:
            worker_module._worker_logs_enabled = printing


__all__ = ["RayEngine", "run_ray_batch", "as_ray_engine", "import_ray", "worker_recipe", "WorkerError",
           "RAY_INSTALL", "CRASH_HOOK_ENV"]
