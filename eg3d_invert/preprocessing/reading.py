"""Reading photos into RGB uint8 arrays, with every failure turned into a specific one-line error;
and finding the photos among files and folders (:func:`collect_photos`).

Accepted inputs: a path (``str`` / ``os.PathLike``), encoded bytes (``bytes``, ``bytearray``,
``memoryview``), a ``PIL.Image.Image`` or a numpy array. Files are decoded by Pillow, so JPEG,
PNG, WebP, BMP, TIFF (and the other formats Pillow reads) work; only the first frame of an
animated or multi-page file is used.

Conventions of the result: ``(H, W, 3)`` ``uint8``, RGB order, C-contiguous, EXIF orientation
already applied (so row 0 is the top of the scene as a viewer sees it). Conversions:

* grayscale, bilevel and palette images are expanded to RGB;
* images with transparency (RGBA, LA, PA, palette or RGB with a transparent colour) are
  composited over a neutral grey (``NEUTRAL_BACKGROUND``), so a transparent background does not
  turn black and confuse the face detector;
* CMYK (and YCbCr, LAB, HSV) are converted with Pillow's colour conversion (no ICC profile
  handling: embedded profiles are ignored for every mode);
* 16-bit images are scaled to 8 bits (``round(v / 257)``); 32-bit integer images are treated as
  16-bit; float images are taken as ``[0, 1]`` if their maximum is at most 1, else as ``[0, 255]``.

Numpy arrays are taken as RGB (not OpenCV's BGR): ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or
``(H, W, 4)`` (alpha composited like files), dtype ``uint8``, ``uint16``, ``bool`` or float.

Decompression bombs: a file whose header declares more than ``max_pixels`` pixels (default
:data:`DEFAULT_MAX_PIXELS`, 100 MP) is refused before its pixels are decoded; pass
``max_pixels=None`` to lift the limit.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import (CorruptImageError, EmptyImageError, ImageNotFoundError, ImageReadError,
                      ImageTooLargeError, NotAnImageError, UnsupportedImageError)

#: Default pixel limit (width x height) above which a photo is refused as a decompression bomb.
DEFAULT_MAX_PIXELS = 100_000_000
#: RGB colour that transparent pixels are composited over.
NEUTRAL_BACKGROUND = (128, 128, 128)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

# Pillow's own bomb guard is a process-wide setting; it is lifted (under this lock) only when a
# caller asks for a limit above Pillow's hard one.
_PIL_LIMIT_LOCK = threading.Lock()
# Errors Pillow and its plugins raise on damaged data (truncated files, bad chunks, bad zlib data).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
                  MemoryError)


#: File suffixes picked up when a folder is given (case-insensitive). Files named explicitly are
#: tried whatever their suffix.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def collect_photos(inputs: Iterable[os.PathLike | str], exclude: Iterable[os.PathLike | str] = ()) -> list[Path]:
    """Photos to process: files as given, folders recursed (sorted), duplicates dropped.

    Paths that do not exist are kept, so that they are reported as failures. Folders in
    ``exclude`` (e.g. the output folder) are not recursed into.
    """
    skip = {Path(p).resolve() for p in exclude}
    found: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            found.append(p)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if path.resolve() in skip:
                continue
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if (Path(root) / d).resolve() not in skip and not d.startswith("."))
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."):
                        add(Path(root) / f)
        else:
            add(path)
    return found


def source_name(source: object) -> str:
    """A short human-readable name for a photo source, used in messages and results."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(memoryview(source).cast('B'))} bytes>"
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "") or ""
        return str(filename) if filename else f"<PIL image {source.width}x{source.height} {source.mode}>"
    if isinstance(source, np.ndarray):
        return f"<array {'x'.join(map(str, source.shape))} {source.dtype}>"
    return f"<{type(source).__name__}>"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def read_image(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               background: tuple[int, int, int] = NEUTRAL_BACKGROUND) -> np.ndarray:
    """Decode a photo to an ``(H, W, 3)`` RGB ``uint8`` array (see the module docstring).

    Args:
        source: path, encoded bytes, PIL image or numpy array.
        max_pixels: refuse images with more pixels than this (``None``: no limit).
        background: RGB colour transparent pixels are composited over.

    Raises:
        ImageNotFoundError: the path does not exist or is not a regular file.
        EmptyImageError: zero-byte file or empty bytes.
        NotAnImageError: the data is not a recognised image format.
        CorruptImageError: truncated or damaged pixel data.
        ImageTooLargeError: more than ``max_pixels`` pixels.
        UnsupportedImageError: an array or pixel mode that has no RGB meaning.
        TypeError: ``source`` is of an unsupported Python type.
    """
    if max_pixels is not None and (not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0):
        raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    background = _check_background(background)
    name = source_name(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, name, max_pixels, background)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, name, max_pixels)
        return _decode(source, name, background)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageNotFoundError(f"{name}: no such file")
        if not path.is_file():
            raise ImageNotFoundError(f"{name}: not a regular file")
        if path.stat().st_size == 0:
            raise EmptyImageError(f"{name}: the file is empty (0 bytes)")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageReadError(f"{name}: cannot read the file: {_one_line(exc)}") from exc
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise EmptyImageError(f"{name}: no data (0 bytes)")
    else:
        raise TypeError(f"expected a path, bytes, PIL image or numpy array, got {type(source).__name__}")
    return _from_encoded(data, name, max_pixels, background)


def _check_background(background) -> tuple[int, int, int]:
    try:
        bg = tuple(int(v) for v in background)
    except TypeError:
        bg = ()
    if len(bg) != 3 or not all(0 <= v <= 255 for v in bg):
        raise ValueError(f"background must be 3 integers in [0, 255], got {background!r}")
    return bg  # type: ignore[return-value]


def _check_pixels(width: int, height: int, name: str, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise UnsupportedImageError(f"{name}: the image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} = {width * height / 1e6:.1f} MP is above the limit of "
            f"{max_pixels / 1e6:g} MP (possible decompression bomb; raise max_pixels, on the command line "
            f"--max-megapixels, to allow it)")


def _open(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            pil_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            if max_pixels is not None and max_pixels <= pil_limit:
                raise ImageTooLargeError(
                    f"{name}: more than {max_pixels / 1e6:g} MP (possible decompression bomb; raise "
                    f"max_pixels, on the command line --max-megapixels, to allow it)") from exc
            # The caller allowed more than Pillow's hard limit: open with Pillow's guard lifted
            # (reading the header only), our own limit is checked right after.
            with _PIL_LIMIT_LOCK:
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    return Image.open(io.BytesIO(data))
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
        except UnidentifiedImageError as exc:
            raise NotAnImageError(f"{name}: not a recognised image format") from exc
        except _DECODE_ERRORS as exc:
            raise CorruptImageError(f"{name}: damaged image header: {_one_line(exc)}") from exc


def _from_encoded(data: bytes, name: str, max_pixels: int | None, background) -> np.ndarray:
    img = _open(data, name, max_pixels)
    _check_pixels(img.width, img.height, name, max_pixels)
    return _decode(img, name, background)


def _decode(img: Image.Image, name: str, background) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            return _from_pil(img, name, background)
    except ImageReadError:
        raise
    except _DECODE_ERRORS as exc:
        raise CorruptImageError(f"{name}: truncated or damaged image data: {_one_line(exc)}") from exc


def _from_pil(img: Image.Image, name: str, background) -> np.ndarray:
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    has_transparency = "transparency" in img.info
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (has_transparency and mode in ("P", "L", "RGB", "1")):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        return _composite(rgba[..., :3], rgba[..., 3:] / 255.0, background)
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float64)
        return _gray_to_rgb(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8))
    if mode == "F":
        return _gray_to_rgb(_float_to_uint8(np.asarray(img, dtype=np.float64), name))
    try:
        return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except ValueError as exc:
        raise UnsupportedImageError(f"{name}: pixel mode {mode!r} cannot be converted to RGB") from exc


def _composite(rgb: np.ndarray, alpha: np.ndarray, background) -> np.ndarray:
    """``rgb`` float (H, W, 3) in [0, 255], ``alpha`` float (H, W, 1) in [0, 1]."""
    bg = np.asarray(background, dtype=np.float32)
    out = rgb * alpha + bg * (1.0 - alpha)
    return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))


def _float_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(arr)):
        raise UnsupportedImageError(f"{name}: the image contains NaN or infinite values")
    scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
    return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)


def _from_array(arr: np.ndarray, name: str, max_pixels: int | None, background) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise UnsupportedImageError(
            f"{name}: expected an array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
            f"got {tuple(arr.shape)}")
    _check_pixels(arr.shape[1], arr.shape[0], name, max_pixels)
    if arr.dtype == np.uint8:
        u8 = arr
    elif arr.dtype == np.bool_:
        u8 = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        u8 = np.rint(arr.astype(np.float64) / 257.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        u8 = _float_to_uint8(arr.astype(np.float64), name)
    else:
        raise UnsupportedImageError(f"{name}: unsupported array dtype {arr.dtype} (use uint8, uint16, "
                                    f"bool or float in [0, 1])")
    if u8.ndim == 2:
        return _gray_to_rgb(u8)
    if u8.shape[-1] == 4:
        f = u8.astype(np.float32)
        return _composite(f[..., :3], f[..., 3:] / 255.0, background)
    return np.ascontiguousarray(u8)
