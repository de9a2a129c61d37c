"""Photo reading: formats, modes, EXIF orientation, and one specific error per failure."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from eg3d_invert.errors import (CorruptImageError, EmptyImageError, ImageNotFoundError, ImageReadError,
                                ImageTooLargeError, NotAnImageError, UnsupportedImageError)
from eg3d_invert.preprocessing import read_image
from eg3d_invert.preprocessing.reading import NEUTRAL_BACKGROUND, source_name


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})])
def test_lossless_formats_round_trip(tmp_path, astronaut, fmt, kw):
    path = tmp_path / f"a.{fmt.lower()}"
    path.write_bytes(_encode(Image.fromarray(astronaut), fmt, **kw))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == astronaut.shape and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, astronaut)


def test_jpeg_and_inputs_of_every_kind_agree(tmp_path, astronaut):
    data = _encode(Image.fromarray(astronaut), "JPEG", quality=95)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    from_path = read_image(path)
    assert np.abs(from_path.astype(int) - astronaut).mean() < 3  # JPEG loss only
    np.testing.assert_array_equal(read_image(str(path)), from_path)
    np.testing.assert_array_equal(read_image(data), from_path)
    np.testing.assert_array_equal(read_image(bytearray(data)), from_path)
    np.testing.assert_array_equal(read_image(memoryview(data)), from_path)
    np.testing.assert_array_equal(read_image(Image.open(path)), from_path)
    np.testing.assert_array_equal(read_image(from_path), from_path)


def test_exif_orientation_is_applied(tmp_path, astronaut):
    # Orientation 6: the stored pixels must be turned 90 degrees clockwise to display, so store
    # the upright photo turned counter-clockwise.
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())
    assert Image.open(path).size == (astronaut.shape[0], astronaut.shape[1])
    out = read_image(path)
    assert out.shape == astronaut.shape
    assert np.abs(out.astype(int) - astronaut).mean() < 3


def test_grayscale_palette_bilevel_become_rgb(astronaut):
    gray = Image.fromarray(astronaut).convert("L")
    out = read_image(_encode(gray, "PNG"))
    assert out.shape == astronaut.shape
    np.testing.assert_array_equal(out[..., 0], np.asarray(gray))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    pal = Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE)
    np.testing.assert_array_equal(read_image(_encode(pal, "PNG")), np.asarray(pal.convert("RGB")))
    bilevel = gray.convert("1")
    assert set(np.unique(read_image(_encode(bilevel, "PNG")))) <= {0, 255}


def test_cmyk_is_converted(astronaut):
    cmyk = Image.fromarray(astronaut).convert("CMYK")
    out = read_image(_encode(cmyk, "JPEG", quality=95))
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - astronaut).mean() < 6
    out_tiff = read_image(_encode(cmyk, "TIFF"))
    assert np.abs(out_tiff.astype(int) - astronaut).mean() < 2


def test_16_bit_images_are_scaled_not_clipped(tmp_path, astronaut):
    import cv2

    wide = astronaut.astype(np.uint16) * 257
    path = tmp_path / "rgb48.png"
    cv2.imwrite(str(path), wide[..., ::-1])
    np.testing.assert_array_equal(read_image(path), astronaut)
    gray16 = (np.linspace(0, 65535, 256 * 64).reshape(64, 256)).astype(np.uint16)
    path = tmp_path / "gray16.png"
    cv2.imwrite(str(path), gray16)
    assert Image.open(path).mode.startswith("I")
    out = read_image(path)
    np.testing.assert_array_equal(out[..., 0], np.rint(gray16 / 257.0).astype(np.uint8))
    assert out.max() == 255 and out.min() == 0  # a plain convert("L") would clip at 255 everywhere
    np.testing.assert_array_equal(read_image(gray16), out)


def test_transparency_is_composited_on_neutral_grey(astronaut):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:100, :, 3] = 0
    rgba[100:200, :, 3] = 128
    for source in (_encode(Image.fromarray(rgba, "RGBA"), "PNG"), rgba):
        out = read_image(source)
        assert out.shape == astronaut.shape
        assert np.all(out[:100] == np.array(NEUTRAL_BACKGROUND, np.uint8))
        np.testing.assert_array_equal(out[200:], astronaut[200:])
        half = np.rint(astronaut[100:200] * (128 / 255) + np.array(NEUTRAL_BACKGROUND) * (127 / 255))
        assert np.abs(out[100:200].astype(int) - half).max() <= 1
    la = Image.fromarray(rgba, "RGBA").convert("LA")
    out = read_image(_encode(la, "PNG"), background=(0, 0, 0))
    assert np.all(out[:100] == 0)


def test_arrays_of_other_dtypes():
    f = np.linspace(0, 1, 40 * 30 * 3).reshape(40, 30, 3)
    np.testing.assert_array_equal(read_image(f), np.rint(f * 255).astype(np.uint8))
    b = np.zeros((20, 20), bool)
    b[5:10] = True
    assert read_image(b)[7, 0, 0] == 255 and read_image(b)[0, 0, 0] == 0
    assert read_image(np.zeros((20, 20, 1), np.uint8)).shape == (20, 20, 3)
    with pytest.raises(UnsupportedImageError, match="shape"):
        read_image(np.zeros((20, 20, 2), np.uint8))
    with pytest.raises(UnsupportedImageError, match="dtype"):
        read_image(np.zeros((20, 20, 3), np.int64))
    with pytest.raises(UnsupportedImageError, match="NaN"):
        read_image(np.full((20, 20, 3), np.nan))
    with pytest.raises(UnsupportedImageError, match="no pixels"):
        read_image(np.zeros((0, 20, 3), np.uint8))


def test_missing_empty_not_an_image_and_truncated(tmp_path, astronaut):
    with pytest.raises(ImageNotFoundError, match="nope.jpg: no such file"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageNotFoundError, match="not a regular file"):
        read_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(EmptyImageError, match="empty.png"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(EmptyImageError):
        read_image(b"")
    (tmp_path / "text.jpg").write_text("this is not a photo")
    with pytest.raises(NotAnImageError, match="text.jpg: not a recognised image format"):
        read_image(tmp_path / "text.jpg")
    data = _encode(Image.fromarray(astronaut), "JPEG", quality=95)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptImageError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")
    png = _encode(Image.fromarray(astronaut), "PNG")
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(CorruptImageError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    for exc_type in (ImageNotFoundError, EmptyImageError, NotAnImageError, CorruptImageError):
        assert issubclass(exc_type, ImageReadError)
    with pytest.raises(TypeError):
        read_image(12345)


def test_errors_are_one_line(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "bad.png")
    assert "\n" not in str(info.value) and "bad.png" in str(info.value)


def test_pixel_limit_is_enforced_before_decoding(tmp_path):
    # 2000 x 2000 = 4 MP against a 1 MP limit, and the limit can be lifted.
    path = tmp_path / "big.png"
    Image.new("L", (2000, 2000), 10).save(path)
    with pytest.raises(ImageTooLargeError, match="big.png: 2000x2000 = 4.0 MP is above the limit of 1 MP"):
        read_image(path, max_pixels=1_000_000)
    assert read_image(path, max_pixels=None).shape == (2000, 2000, 3)
    with pytest.raises(ImageTooLargeError):
        read_image(np.zeros((2000, 2000), np.uint8), max_pixels=1_000_000)
    # Beyond Pillow's own hard limit (~179 MP): a small file declaring 195 MP is refused by default
    # without decoding it (bilevel keeps creating it cheap).
    bomb = tmp_path / "bomb.png"
    Image.new("1", (15000, 13000), 0).save(bomb)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(ImageTooLargeError, match="bomb.png"):
        read_image(bomb)
    with pytest.raises(ValueError):
        read_image(bomb, max_pixels=0)


def test_source_names():
    assert source_name("x/y.jpg") == "x/y.jpg"
    assert source_name(b"abc") == "<3 bytes>"
    assert source_name(np.zeros((4, 5, 3), np.uint8)) == "<array 4x5x3 uint8>"
