"""Measuring images and parsing the GPU delay (services/processor/domain.py)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from services.processor.domain import ImageError, Size, measure, parse_gpu_delay

MAX_PIXELS = 50_000_000
SIZES = [(1, 1), (37, 19), (640, 480), (3, 200)]


def pillow_image(width: int, height: int, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, fmt)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (8-bit RGB) with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + png_chunk(b"IEND", b""))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_measures_pillow_images(fmt: str, width: int, height: int) -> None:
    size = measure(pillow_image(width, height, fmt), MAX_PIXELS)
    assert size == Size(width, height)
    assert size.perimeter == 2 * (width + height)


def test_truncated_jpeg_is_refused() -> None:
    data = pillow_image(640, 480, "JPEG")
    with pytest.raises(ImageError, match="truncated") as info:
        measure(data[: len(data) // 2], MAX_PIXELS)
    assert info.value.transient is False


def test_truncated_png_is_refused() -> None:
    data = pillow_image(64, 64, "PNG")
    with pytest.raises(ImageError, match="truncated"):
        measure(data[: len(data) - 20], MAX_PIXELS)


@pytest.mark.parametrize("data", [b"", b"hello, world", b"<html><body>404</body></html>", bytes(range(256)) * 4])
def test_non_image_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ImageError, match="not an image"):
        measure(data, MAX_PIXELS)


def test_pixel_bomb_png_is_refused_from_its_header() -> None:
    data = png_claiming(100_000, 100_000)
    assert len(data) < 100
    with pytest.raises(ImageError, match="too large"):
        measure(data, MAX_PIXELS)


def test_max_pixels_is_enforced() -> None:
    data = pillow_image(100, 50, "PNG")
    assert measure(data, 5000) == Size(100, 50)
    with pytest.raises(ImageError, match="too large"):
        measure(data, 4999)


@pytest.mark.parametrize(("spec", "expected"), [
    ("100-400", (0.1, 0.4)), ("0", (0.0, 0.0)), ("", (0.0, 0.0)), ("250", (0.25, 0.25)),
    (" 50-50 ", (0.05, 0.05)), ("0-100", (0.0, 0.1)),
])
def test_parse_gpu_delay(spec: str, expected: tuple[float, float]) -> None:
    assert parse_gpu_delay(spec) == pytest.approx(expected)


@pytest.mark.parametrize("spec", ["400-100", "abc", "10-x", "-5"])
def test_parse_gpu_delay_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_gpu_delay(spec)
