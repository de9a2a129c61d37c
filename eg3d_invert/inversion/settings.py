"""Frozen, typed settings for projection and pivotal tuning, with presets and a JSON round trip.

The ``'official'`` presets reproduce the published pipelines, value for value:

* :class:`ProjectionSettings` -- oneThousand1000/EG3D-projector (``w_projector.py`` /
  ``w_plus_projector.py``, itself NVIDIA's StyleGAN2-ADA projector): 500 steps, w statistics
  from 600 mapped samples (``RandomState(123)``) conditioned on the frontal camera, Adam
  ``betas=(0.9, 0.999)`` with peak lr 0.01, 5 % linear ramp-up and 25 % cosine ramp-down,
  latent noise ``0.05 * w_std`` fading quadratically over the first 75 %, noise buffers
  optimised with an autocorrelation penalty of weight 1e5, VGG LPIPS on the image
  area-downsampled to 256x256, depth samples x2.
* :class:`TuningSettings` -- danielroich/PTI ``configs/hyperparameters.py`` as used by
  EG3D-projector: 350 steps, Adam lr 3e-4 over every generator parameter, L2 weight 1 + AlexNet
  LPIPS weight 1, stop once LPIPS <= 0.06, locality regularisation off (PTI's settings when
  on), depth samples x2.

The ``'fast'`` presets are this project's own coarse-to-fine schedule, measured against the
official one by ``benchmarks/inversion_quality.py`` (see :data:`PROJECTION_PRESETS`). Every setting
is validated on construction and raises :class:`~eg3d_invert.errors.ConfigError` naming the
field. :func:`resolve_settings` turns the convenience arguments of the API and the command
line (``preset``, ``steps``, ``seed``, ...) into the two settings objects.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import ConfigError

LPIPS_NETS = ("vgg", "alex")
SPACES = ("w", "w+")
INITS = ("mean", "search")


def _check(cond: bool, name: str, msg: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{name} {msg}, got {value!r}")


def _positive_int(obj, name: str, allow_zero: bool = False) -> None:
    v = getattr(obj, name)
    ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if allow_zero else v > 0)
    _check(ok, name, "must be a non-negative integer" if allow_zero else "must be a positive integer", v)


def _finite(obj, name: str, lo: float | None = 0.0, lo_open: bool = False, hi: float | None = None) -> None:
    v = getattr(obj, name)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v <= hi
    rng = f"{'>' if lo_open else '>='} {lo}" if lo is not None else "finite"
    if hi is not None:
        rng += f" and <= {hi}"
    _check(ok, name, f"must be a finite number {rng}", v)


def _bool(obj, name: str) -> None:
    _check(isinstance(getattr(obj, name), bool), name, "must be True or False", getattr(obj, name))


def _check_coarse(obj) -> None:
    _positive_int(obj, "coarse_steps", allow_zero=True)
    _check(obj.coarse_steps <= obj.num_steps, "coarse_steps", f"must be at most num_steps ({obj.num_steps})",
           obj.coarse_steps)
    _finite(obj, "coarse_resolution", lo_open=True, hi=1.0)
    _finite(obj, "coarse_sample_mult", lo_open=True, hi=16)


def coarse_resolution(settings, neural_rendering_resolution: int) -> int:
    """Raw render size of a coarse step: ``coarse_resolution`` of the checkpoint's, at least 32 px
    (the smallest image on which both LPIPS networks still have every layer)."""
    return max(32, int(round(neural_rendering_resolution * settings.coarse_resolution)))


class _JsonSettings:
    """JSON round trip shared by the settings classes (nested settings become nested objects)."""

    _nested: ClassVar[dict[str, type]] = {}

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, _JsonSettings) else v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} must be read from a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown setting(s) {', '.join(unknown)}")
        kwargs = dict(data)
        for name, sub in cls._nested.items():
            if name in kwargs and isinstance(kwargs[name], dict):
                kwargs[name] = sub.from_dict(kwargs[name])
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.__name__}: invalid JSON ({exc})") from None
        return cls.from_dict(data)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class CameraRefinementSettings(_JsonSettings):
    """Joint refinement of the photo's camera: small learned yaw/pitch/roll and translation.

    The corrections are optimised in units of their prior standard deviations and pulled back
    toward the estimate by a Gaussian prior, ``prior_weight * 0.5 * sum((delta / sigma)^2)``.
    Yaw and pitch orbit the camera about the look-at pivot (geometric convention of
    :func:`eg3d_invert.camera.camera_from_angles`: yaw toward +x, pitch up), roll turns it about
    its viewing axis, the translation is along the camera's own axes (world units).

    Attributes:
        enabled: refine the camera at all.
        learning_rate: Adam step in prior-sigma units per step (follows the main lr's ramp shape).
        rotation_sigma_deg: prior std of each angle, degrees.
        translation_sigma: prior std of each translation component, world units (the FFHQ head
            is about 0.5 units wide, the camera 2.7 units away).
        prior_weight: weight of the prior term relative to the image loss.
    """

    enabled: bool = False
    learning_rate: float = 0.02
    rotation_sigma_deg: float = 3.0
    translation_sigma: float = 0.02
    prior_weight: float = 1e-3

    def __post_init__(self):
        _bool(self, "enabled")
        _finite(self, "learning_rate")
        _finite(self, "rotation_sigma_deg", lo_open=True, hi=45.0)
        _finite(self, "translation_sigma", lo_open=True, hi=1.0)
        _finite(self, "prior_weight")


@dataclass(frozen=True)
class ProjectionSettings(_JsonSettings):
    """Settings of :func:`eg3d_invert.inversion.project` (defaults: EG3D-projector's).

    Attributes:
        space: ``'w'`` (one w repeated to every layer) or ``'w+'`` (one w per layer).
        num_steps: optimisation steps.
        w_avg_samples, w_avg_seed: how the starting point ``w_avg`` and the spread ``w_std``
            are estimated: ``w_avg_samples`` latents ``z ~ RandomState(w_avg_seed)`` mapped with
            the frontal conditioning camera (as the official projector does).
        learning_rate: peak Adam learning rate.
        lr_rampup, lr_rampdown: fractions of the schedule for the linear warm-up and the
            cosine decay to zero.
        betas: Adam betas.
        initial_noise_factor, noise_ramp: Gaussian noise of std ``factor * w_std`` is added to w
            at each step, fading as ``(1 - t / noise_ramp)^2`` (exploration early on).
        optimize_noise: optimise the backbone's constant noise maps as well (official).
        noise_regularization: weight of the noise maps' multi-scale autocorrelation penalty.
        loss_resolution: images larger than this are area-downsampled to it before LPIPS
            (VGG was trained at 224 px).
        lpips_net: LPIPS backbone, ``'vgg'`` (official projector) or ``'alex'``.
        l2_weight: weight of a pixel MSE term on the full image (0 = official, LPIPS only).
        sample_mult: multiplier of both depth sample counts while rendering.
        deterministic_render: render without random depth jitter during optimisation.
        init: ``'mean'`` starts at ``w_avg`` (official); ``'search'`` renders ``init_candidates``
            truncated samples plus ``w_avg`` and starts at the one closest to the photo.
        init_candidates, init_truncation: the candidates of ``init='search'``.
        seed: seeds every random draw (latent noise, noise maps, depth jitter, candidates).
        camera: joint camera refinement (off in the official projector).
        coarse_steps: the first this many steps are coarse (0 = official): the raw neural render
            at ``coarse_resolution`` times the checkpoint's neural rendering resolution (at least
            32 px) with ``coarse_sample_mult`` depth samples, no super-resolution, compared by
            LPIPS with the photo area-downsampled to that size. EG3D's dual discrimination
            trains the raw render to be the downsampled image, and a W latent is decided by
            coarse structure, so these steps do most of the work at a fraction of the cost.
        coarse_resolution, coarse_sample_mult: see ``coarse_steps``.
    """

    space: str = "w"
    num_steps: int = 500
    w_avg_samples: int = 600
    w_avg_seed: int = 123
    learning_rate: float = 0.01
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    betas: tuple = (0.9, 0.999)
    initial_noise_factor: float = 0.05
    noise_ramp: float = 0.75
    optimize_noise: bool = True
    noise_regularization: float = 1e5
    loss_resolution: int = 256
    lpips_net: str = "vgg"
    l2_weight: float = 0.0
    sample_mult: float = 2.0
    deterministic_render: bool = False
    init: str = "mean"
    init_candidates: int = 0
    init_truncation: float = 0.7
    seed: int = 0
    camera: CameraRefinementSettings = field(default_factory=CameraRefinementSettings)
    coarse_steps: int = 0
    coarse_resolution: float = 0.5
    coarse_sample_mult: float = 1.0

    _nested: ClassVar[dict[str, type]] = {"camera": CameraRefinementSettings}

    def __post_init__(self):
        _check(self.space in SPACES, "space", f"must be one of {SPACES}", self.space)
        _positive_int(self, "num_steps")
        _positive_int(self, "w_avg_samples")
        _positive_int(self, "w_avg_seed", allow_zero=True)
        _finite(self, "learning_rate", lo_open=True)
        _finite(self, "lr_rampup", hi=1.0)
        _finite(self, "lr_rampdown", hi=1.0)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else self.betas
        _check(isinstance(betas, tuple) and len(betas) == 2 and all(
            isinstance(b, (int, float)) and 0 <= b < 1 for b in betas), "betas", "must be two numbers in [0, 1)",
            self.betas)
        object.__setattr__(self, "betas", tuple(float(b) for b in betas))
        _finite(self, "initial_noise_factor")
        _finite(self, "noise_ramp", lo_open=True)
        _bool(self, "optimize_noise")
        _finite(self, "noise_regularization")
        _positive_int(self, "loss_resolution")
        _check(self.lpips_net in LPIPS_NETS, "lpips_net", f"must be one of {LPIPS_NETS}", self.lpips_net)
        _finite(self, "l2_weight")
        _finite(self, "sample_mult", lo_open=True, hi=16)
        _bool(self, "deterministic_render")
        _check(self.init in INITS, "init", f"must be one of {INITS}", self.init)
        _positive_int(self, "init_candidates", allow_zero=True)
        _check(self.init != "search" or self.init_candidates > 0, "init_candidates",
               "must be positive when init='search'", self.init_candidates)
        _finite(self, "init_truncation", hi=1.0)
        _positive_int(self, "seed", allow_zero=True)
        _check(isinstance(self.camera, CameraRefinementSettings), "camera", "must be CameraRefinementSettings",
               self.camera)
        _check_coarse(self)

    @classmethod
    def from_preset(cls, preset: str = "official", **overrides) -> "ProjectionSettings":
        """A preset of :data:`PROJECTION_PRESETS` (``'official'``: EG3D-projector), fields overridden."""
        if preset not in PROJECTION_PRESETS:
            raise ConfigError(f"unknown projection preset {preset!r}; choose one of {sorted(PROJECTION_PRESETS)}")
        return dataclasses.replace(PROJECTION_PRESETS[preset], **overrides)


@dataclass(frozen=True)
class TuningSettings(_JsonSettings):
    """Settings of :func:`eg3d_invert.inversion.tune` (defaults: PTI's, as EG3D-projector runs it).

    Attributes:
        num_steps: maximum optimisation steps.
        learning_rate: Adam learning rate over every generator parameter (constant, as PTI,
            unless ``lr_rampdown``).
        lr_rampdown: fraction of the schedule, at its end, over which the rate decays to 0 along
            a cosine (the projector's ramp-down); 0 keeps it constant as PTI does.
        l2_weight, lpips_weight: weights of the pixel MSE and of LPIPS, both on the full image
            in [-1, 1].
        lpips_net: LPIPS backbone, ``'alex'`` (PTI) or ``'vgg'``.
        lpips_threshold: stop as soon as the LPIPS of the current render is at or below this
            (checked before the step, as PTI does); 0 disables early stopping.
        locality_regularization: PTI's locality regulariser: renders of latents moved
            ``locality_alpha`` units from the pivot toward ``locality_samples`` random
            (``truncation = locality_truncation``) latents must stay as the original generator
            rendered them (L2 weight ``locality_l2_weight``, LPIPS ``locality_lpips_weight``),
            every ``locality_interval`` steps.
        sample_mult: multiplier of both depth sample counts while rendering.
        deterministic_render: render without random depth jitter during optimisation.
        use_pivot_noise: start from the noise maps the projection optimised (if the pivot has
            them) instead of the generator's own. The official pipeline discards them.
        seed: seeds the depth jitter and the locality samples.
        camera: joint camera refinement.
        coarse_steps: the first this many steps are coarse (0 = official): L2 + LPIPS between
            the raw neural render at ``coarse_resolution`` times the checkpoint's neural rendering
            resolution (``coarse_sample_mult`` depth samples, no super-resolution) and the photo
            area-downsampled to that size; the backbone and the decoder (shape and colour) do
            most of their moving there, cheaply. The LPIPS threshold is checked on full-size
            steps only (a distance at another resolution is another scale).
        coarse_resolution, coarse_sample_mult: see ``coarse_steps``.
    """

    num_steps: int = 350
    learning_rate: float = 3e-4
    lr_rampdown: float = 0.0
    betas: tuple = (0.9, 0.999)
    l2_weight: float = 1.0
    lpips_weight: float = 1.0
    lpips_net: str = "alex"
    lpips_threshold: float = 0.06
    locality_regularization: bool = False
    locality_samples: int = 1
    locality_interval: int = 1
    locality_l2_weight: float = 0.1
    locality_lpips_weight: float = 0.1
    locality_alpha: float = 30.0
    locality_truncation: float = 0.5
    sample_mult: float = 2.0
    deterministic_render: bool = False
    use_pivot_noise: bool = False
    seed: int = 0
    camera: CameraRefinementSettings = field(default_factory=CameraRefinementSettings)
    coarse_steps: int = 0
    coarse_resolution: float = 0.5
    coarse_sample_mult: float = 1.0

    _nested: ClassVar[dict[str, type]] = {"camera": CameraRefinementSettings}

    def __post_init__(self):
        _positive_int(self, "num_steps")
        _finite(self, "learning_rate", lo_open=True)
        _finite(self, "lr_rampdown", hi=1.0)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else self.betas
        _check(isinstance(betas, tuple) and len(betas) == 2 and all(
            isinstance(b, (int, float)) and 0 <= b < 1 for b in betas), "betas", "must be two numbers in [0, 1)",
            self.betas)
        object.__setattr__(self, "betas", tuple(float(b) for b in betas))
        _finite(self, "l2_weight")
        _finite(self, "lpips_weight")
        _check(self.l2_weight > 0 or self.lpips_weight > 0, "l2_weight", "and lpips_weight cannot both be 0",
               (self.l2_weight, self.lpips_weight))
        _check(self.lpips_net in LPIPS_NETS, "lpips_net", f"must be one of {LPIPS_NETS}", self.lpips_net)
        _finite(self, "lpips_threshold")
        _bool(self, "locality_regularization")
        _positive_int(self, "locality_samples")
        _positive_int(self, "locality_interval")
        _finite(self, "locality_l2_weight")
        _finite(self, "locality_lpips_weight")
        _finite(self, "locality_alpha", lo_open=True)
        _finite(self, "locality_truncation", hi=1.0)
        _finite(self, "sample_mult", lo_open=True, hi=16)
        _bool(self, "deterministic_render")
        _bool(self, "use_pivot_noise")
        _positive_int(self, "seed", allow_zero=True)
        _check(isinstance(self.camera, CameraRefinementSettings), "camera", "must be CameraRefinementSettings",
               self.camera)
        _check_coarse(self)

    @classmethod
    def from_preset(cls, preset: str = "official", **overrides) -> "TuningSettings":
        """A preset of :data:`TUNING_PRESETS` (``'official'``: PTI), fields overridden."""
        if preset not in TUNING_PRESETS:
            raise ConfigError(f"unknown tuning preset {preset!r}; choose one of {sorted(TUNING_PRESETS)}")
        return dataclasses.replace(TUNING_PRESETS[preset], **overrides)


#: The preset the CLI and the API use when none is named: the official schedules, until
#: ``benchmarks/inversion_quality.py`` shows a faster one at least as good on every target.
DEFAULT_PRESET = "official"

#: ``'fast'`` (issue 9): a coarse-to-fine schedule for CPUs. Projection: 200 steps, all on the
#: raw neural render at half the neural rendering resolution with one depth sample per official
#: one (no super-resolution, LPIPS on the small image), without depth jitter. Tuning: 80 steps on the
#: full super-resolved image at twice PTI's learning rate, single depth sampling, no jitter.
#: On the full ffhq512-128 configuration it costs about 1/6 of the official schedule (photo to
#: outputs, ``benchmarks/pipeline.py``); its quality against the official schedule is measured by
#: ``benchmarks/inversion_quality.py`` (scenario ``c2f_i``; README has the figures and their limits).
PROJECTION_PRESETS: dict[str, ProjectionSettings] = {
    "official": ProjectionSettings(),
    "fast": ProjectionSettings(num_steps=200, coarse_steps=200, deterministic_render=True),
}
TUNING_PRESETS: dict[str, TuningSettings] = {
    "official": TuningSettings(),
    "fast": TuningSettings(num_steps=80, learning_rate=6e-4, sample_mult=1.0, deterministic_render=True),
}


def _with_steps(settings, steps: int):
    """``settings`` with ``num_steps=steps``, its coarse steps scaled in proportion (an all-coarse
    schedule stays all coarse)."""
    coarse = settings.coarse_steps
    if coarse:
        coarse = steps if coarse >= settings.num_steps else min(steps, round(coarse * steps / settings.num_steps))
    return settings.replace(num_steps=int(steps), coarse_steps=coarse)


def preset_differences(preset: str) -> dict[str, dict[str, Any]]:
    """The fields in which ``preset`` differs from ``'official'``: ``{'projection': {field: value},
    'tuning': {...}}`` (what help texts and reports say about it)."""
    if preset not in PROJECTION_PRESETS or preset not in TUNING_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PROJECTION_PRESETS))}")
    out: dict[str, dict[str, Any]] = {}
    for stage, presets in (("projection", PROJECTION_PRESETS), ("tuning", TUNING_PRESETS)):
        base, mine = presets["official"].to_dict(), presets[preset].to_dict()
        out[stage] = {k: v for k, v in mine.items() if base[k] != v}
    return out


def preset_phrases(preset: str) -> list[str]:
    """Every difference of ``preset`` from ``'official'`` as a short phrase, projection first
    (``'tuning lr 0.0006 (official 0.0003)'``, ``'no depth jitter in projection'``, ...)."""
    official = {"projection": PROJECTION_PRESETS["official"], "tuning": TUNING_PRESETS["official"]}
    phrases = []
    for stage, changes in preset_differences(preset).items():
        for name, value in changes.items():
            was = getattr(official[stage], name)
            if name == "deterministic_render":
                phrases.append(f"{'no' if value else 'random'} depth jitter in {stage}")
            elif name == "locality_regularization":
                phrases.append(f"PTI's locality regulariser {'on' if value else 'off'}")
            elif name == "num_steps":
                phrases.append(f"{value} {stage} steps (official {was})")
            elif name == "learning_rate":
                phrases.append(f"{stage} lr {value:g} (official {was:g})")
            elif name == "coarse_steps":
                frac = getattr(presets_of(stage)[preset], "coarse_resolution")
                phrases.append(f"{'all' if value == getattr(presets_of(stage)[preset], 'num_steps') else value} "
                               f"{stage} steps on the raw render at {frac:g}x resolution")
            elif name == "sample_mult":
                phrases.append(f"{stage} depth samples x{value:g} (official x{was:g})")
            else:
                phrases.append(f"{stage} {name} {value!r} (official {was!r})")
    return phrases


def presets_of(stage: str) -> dict:
    """The preset table of ``stage`` (``'projection'`` or ``'tuning'``)."""
    return PROJECTION_PRESETS if stage == "projection" else TUNING_PRESETS


def describe_preset(preset: str) -> str:
    """:func:`preset_phrases` as one line, for help texts."""
    return ", ".join(preset_phrases(preset))


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)  # numpy integers too


def resolve_settings(*, preset: str = DEFAULT_PRESET, projector: str | None = None, steps: int | None = None,
                     pti_steps: int | None = None, seed: int | None = 0, camera_refinement: bool = False,
                     projection_lpips: str | None = None, tuning_lpips: str | None = None,
                     projection: ProjectionSettings | None = None,
                     tuning: TuningSettings | None = None) -> tuple[ProjectionSettings, TuningSettings]:
    """The projection and tuning settings that the convenience arguments describe.

    Starts from ``projection`` / ``tuning`` if given, else from the ``preset``; then each argument
    that is not None overrides its field (``projector`` -> ``space``, ``steps`` and ``pti_steps``
    -> ``num_steps``, ``seed`` -> both seeds, ``*_lpips`` -> ``lpips_net``;
    ``camera_refinement=True`` turns joint camera refinement on in both stages with its default
    settings).

    Raises:
        ConfigError: naming the argument that is wrong.
    """
    if not isinstance(preset, str):
        raise ConfigError(f"preset must be a preset name, got {preset!r}")
    if projector is not None and projector not in SPACES:
        raise ConfigError(f"projector must be one of {', '.join(SPACES)}, got {projector!r}")
    for name, value in (("steps", steps), ("pti_steps", pti_steps)):
        if value is not None and not (_is_int(value) and value > 0):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if seed is not None and not (_is_int(seed) and seed >= 0):
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(camera_refinement, bool):
        raise ConfigError(f"camera_refinement must be True or False, got {camera_refinement!r}")
    for name, value in (("projection_lpips", projection_lpips), ("tuning_lpips", tuning_lpips)):
        if value is not None and value not in LPIPS_NETS:
            raise ConfigError(f"{name} must be one of {', '.join(LPIPS_NETS)}, got {value!r}")
    if projection is not None and not isinstance(projection, ProjectionSettings):
        raise ConfigError(f"projection must be a ProjectionSettings, got {type(projection).__name__}")
    if tuning is not None and not isinstance(tuning, TuningSettings):
        raise ConfigError(f"tuning must be a TuningSettings, got {type(tuning).__name__}")

    proj = projection if projection is not None else ProjectionSettings.from_preset(preset)
    tun = tuning if tuning is not None else TuningSettings.from_preset(preset)
    p_changes: dict[str, Any] = {}
    t_changes: dict[str, Any] = {}
    if projector is not None:
        p_changes["space"] = projector
    if steps is not None:
        proj = _with_steps(proj, int(steps))
    if pti_steps is not None:
        tun = _with_steps(tun, int(pti_steps))
    if seed is not None:
        p_changes["seed"] = t_changes["seed"] = int(seed)
    if projection_lpips is not None:
        p_changes["lpips_net"] = projection_lpips
    if tuning_lpips is not None:
        t_changes["lpips_net"] = tuning_lpips
    if camera_refinement:
        p_changes["camera"] = proj.camera if proj.camera.enabled else CameraRefinementSettings(enabled=True)
        t_changes["camera"] = tun.camera if tun.camera.enabled else CameraRefinementSettings(enabled=True)
    return proj.replace(**p_changes), tun.replace(**t_changes)
