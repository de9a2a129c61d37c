"""Exceptions raised by eg3d-invert, and the command line's exit codes.

Every error a user can cause (a bad photo, a bad checkpoint, a missing download) is an
:class:`Eg3dInvertError` subclass with a message that reads as one line, so the CLI can print
it without a traceback. Programming errors (wrong tensor shapes passed by a caller) stay
``ValueError``/``TypeError``.
"""

from __future__ import annotations

# --- exit codes of the command line --------------------------------------------------------------

#: Every input done.
EXIT_OK = 0
#: Some inputs failed (the others are written), or an expected error stopped the command.
EXIT_FAILED = 1
#: Bad usage: an option, the inputs, the output folder, an unknown checkpoint name or device.
EXIT_USAGE = 2
#: Interrupted (Ctrl-C): 128 + SIGINT, as shells report it.
EXIT_INTERRUPTED = 130


class Eg3dInvertError(Exception):
    """Base class of all expected, user-facing errors."""


# --- checkpoints -------------------------------------------------------------------------------


class CheckpointError(Eg3dInvertError):
    """A checkpoint file cannot be read or does not describe a supported generator."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asks the unpickler for something outside the allow-list (would run code)."""


class ConfigError(Eg3dInvertError, ValueError):
    """A generator, rendering or optimisation setting is invalid."""


class OutputError(Eg3dInvertError):
    """An output folder or file cannot be written (a file in the way, no permission, read-only disk)."""


class DeviceError(ConfigError):
    """A torch device was asked for that does not exist on this machine (or is not a device)."""


class DownloadError(Eg3dInvertError):
    """A checkpoint or weight file could not be downloaded or failed its integrity check."""


class MissingWeightsError(Eg3dInvertError):
    """Pretrained weights that are needed are not on disk and cannot be fetched."""


# --- photos and faces --------------------------------------------------------------------------


class ImageReadError(Eg3dInvertError):
    """A photo cannot be read: missing, empty, truncated, not an image, or too large."""


class NoFaceError(Eg3dInvertError):
    """No face (above the confidence threshold) was found in a photo."""


# --- optimisation ------------------------------------------------------------------------------


class NonFiniteLossError(Eg3dInvertError):
    """An optimisation produced a NaN or infinite loss; nothing is written."""


class InterruptedRun(Eg3dInvertError):
    """An optimisation was stopped by its caller (e.g. Ctrl-C) before finishing."""


# --- checkpoint registry and downloads (appended) ---------------------------------------------


class UnknownModelError(CheckpointError):
    """A checkpoint name is not in the registry of released EG3D checkpoints."""


class ChecksumMismatchError(DownloadError):
    """A downloaded file does not have the expected size or SHA-256; nothing was kept."""


# --- photos and faces: specific cases (preprocessing) ------------------------------------------


class ImageNotFoundError(ImageReadError, FileNotFoundError):
    """The photo's path does not exist or is not a file."""


class EmptyImageError(ImageReadError):
    """The photo is a zero-byte file (or empty bytes)."""


class NotAnImageError(ImageReadError):
    """The data is not in an image format that can be decoded."""


class CorruptImageError(ImageReadError):
    """The image header was recognised but the pixel data is truncated or damaged."""


class ImageTooLargeError(ImageReadError):
    """The image has more pixels than the allowed limit (decompression-bomb guard)."""


class UnsupportedImageError(ImageReadError):
    """The image (or array) has a layout or pixel mode that cannot be turned into RGB."""


class FaceIndexError(NoFaceError, IndexError):
    """A face index was requested that is beyond the faces found in the photo."""


class LandmarkError(NoFaceError):
    """A face was detected but its landmarks (and so its pose) could not be located."""


class MissingDependencyError(Eg3dInvertError):
    """An optional package that a chosen feature needs is not installed (the message says what
    to install)."""


class ClusterError(Eg3dInvertError):
    """A Ray cluster cannot be started or reached (``--engine ray``)."""


class ModelFileError(Eg3dInvertError):
    """An optional model file (e.g. dlib's 68-point predictor) is missing or unreadable."""


class EmptyMeshError(Eg3dInvertError):
    """The density never crosses the iso-level inside the (trimmed) box: there is no surface.

    Attributes:
        level: the iso-level asked for; density_range: ``(lowest, highest)`` density found.
    """

    def __init__(self, message: str, level: float | None = None,
                 density_range: tuple[float, float] | None = None):
        super().__init__(message)
        self.level, self.density_range = level, density_range


# --- messages ------------------------------------------------------------------------------------


def first_line(exc: BaseException) -> str:
    """The first line of the exception's message (libraries append advice on later lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type name if it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def failure_message(exc: BaseException, source: object, stage: str | None = None) -> str:
    """How a failed input is reported: ``SOURCE: [STAGE: ]message``.

    Expected errors keep their message (it already names the input when it starts with it);
    anything else is an ``internal error`` with its type, so a bug is never mistaken for bad input.
    """
    if not isinstance(exc, Eg3dInvertError):
        msg = f"internal error: {type(exc).__name__}: {one_line(exc)}"
    elif (msg := one_line(exc)).startswith(str(source)):
        return msg
    return f"{source}: {stage}: {msg}" if stage else f"{source}: {msg}"
