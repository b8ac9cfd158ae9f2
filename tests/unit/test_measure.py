"""Measuring images, the allowed formats, failure categories and the GPU delay
(services/processor/domain.py)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin, SpiderImagePlugin, TgaImagePlugin

from services.processor.domain import (
    FAILURE_CATEGORIES,
    FAILURE_CATEGORY_OTHER,
    ImageError,
    Size,
    failure_category,
    measure,
    parse_gpu_delay,
    parse_image_formats,
)

MAX_PIXELS = 50_000_000
SIZES = [(1, 1), (37, 19), (640, 480), (3, 200)]
FORMATS = parse_image_formats("JPEG,PNG,WEBP,GIF,BMP,TIFF")  # the setting's default
# every reason measure gives starts with one of these (the status API and tests rely on them)
PREFIXES = ("image too large", "corrupt or truncated image", "not an image (unrecognised format)",
            "image has no pixels", "format ")


def pillow_image(width: int, height: int, fmt: str, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), 200 if mode in ("L", "F", "P") else (200, 40, 90)).save(out, fmt)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (8-bit RGB) with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + png_chunk(b"IEND", b""))


def spider_like(size: int = 1280) -> bytes:
    """The file from issue 19: a SPIDER header (27 big-endian floats) for an image inside a
    stack, which makes Pillow's SPIDER decoder raise AttributeError (`stkoffset`)."""
    header = [0.0] * 27
    header[0], header[1], header[4], header[11] = 1, 16, 1, 16   # slices, rows, iform=1 (2D), columns
    header[12], header[21], header[22] = 5, size, size / 5       # labrec * lenbyt == labbyt
    header[23], header[26] = 0, 1                                # istack=0, imgnumber=1
    return struct.pack(">27f", *header).ljust(size, b"\x00")


def tga_like() -> bytes:
    """An 8x8 uncompressed true-colour TGA header (TGA has no signature) and its pixels."""
    return struct.pack("<BBBHHBHHHHBB", 0, 0, 2, 0, 0, 0, 0, 0, 8, 8, 24, 0) + b"\x80" * 8 * 8 * 3


def refused(data: bytes, formats: tuple[str, ...] = FORMATS, max_pixels: int = MAX_PIXELS) -> str:
    with pytest.raises(ImageError) as info:
        measure(data, max_pixels, formats)
    assert info.value.transient is False
    reason = str(info.value)
    assert reason.startswith(PREFIXES), reason
    return reason


# -- measuring --------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_measures_pillow_images(fmt: str, width: int, height: int) -> None:
    size = measure(pillow_image(width, height, fmt), MAX_PIXELS, FORMATS)
    assert size == Size(width, height)
    assert size.perimeter == 2 * (width + height)


def test_truncated_jpeg_is_refused() -> None:
    data = pillow_image(640, 480, "JPEG")
    assert "truncated" in refused(data[: len(data) // 2])


def test_truncated_png_is_refused() -> None:
    data = pillow_image(64, 64, "PNG")
    assert "truncated" in refused(data[: len(data) - 20])


def test_a_signature_whose_header_cannot_be_read_is_corrupt_not_unknown() -> None:
    assert refused(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40) == (
        "corrupt or truncated image: starts like PNG but its header cannot be read")


@pytest.mark.parametrize("data", [b"", b"hello, world", b"<html><body>404</body></html>", bytes(range(256)) * 4])
def test_non_image_bytes_are_refused(data: bytes) -> None:
    assert refused(data) == "not an image (unrecognised format)"


def test_pixel_bomb_png_is_refused_from_its_header() -> None:
    data = png_claiming(100_000, 100_000)
    assert len(data) < 100
    assert refused(data).startswith("image too large")


@pytest.mark.parametrize(("width", "height"), [(2**31, 1), (10_000, 10_000), (2**31 - 1, 2**31 - 1)])
def test_pillows_own_bomb_check_is_too_large_even_above_max_pixels(width: int, height: int) -> None:
    """Pillow warns above 89M pixels and raises above twice that: both are 'image too large'."""
    assert refused(png_claiming(width, height), max_pixels=10**20).startswith("image too large")


def test_max_pixels_is_enforced() -> None:
    data = pillow_image(100, 50, "PNG")
    assert measure(data, 5000, FORMATS) == Size(100, 50)
    assert refused(data, max_pixels=4999).startswith("image too large: 100x50 pixels")


def test_an_image_without_pixels_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's own plugins refuse a zero size; a plugin that did not would be caught here."""
    opened = Image.open(io.BytesIO(pillow_image(3, 5, "BMP")))
    monkeypatch.setattr(opened, "_size", (0, 5))
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: opened)
    assert refused(b"BM") == "image has no pixels"


# -- allowed formats --------------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "mode", "formats"), [
    ("GIF", "RGB", ("PNG",)), ("ICO", "RGB", FORMATS), ("PCX", "RGB", FORMATS), ("PPM", "RGB", FORMATS),
    ("SGI", "RGB", ("JPEG", "PNG")), ("BLP", "P", FORMATS), ("QOI", "RGB", FORMATS), ("PNG", "RGB", ("JPEG", "GIF")),
])
def test_a_format_not_allowed_is_named(fmt: str, mode: str, formats: tuple[str, ...]) -> None:
    try:
        data = pillow_image(6, 4, fmt, mode)
    except (OSError, KeyError) as exc:  # an encoder this Pillow was built without
        pytest.skip(f"this Pillow cannot write {fmt}: {exc}")
    assert refused(data, formats) == f"format {fmt} not allowed (IMAGE_FORMATS: {','.join(formats)})"


@pytest.mark.parametrize(("data", "plugin"), [(spider_like(), SpiderImagePlugin.SpiderImageFile),
                                               (tga_like(), TgaImagePlugin.TgaImageFile)])
def test_formats_without_a_signature_are_refused_without_their_decoder_running(
        monkeypatch: pytest.MonkeyPatch, data: bytes, plugin: type) -> None:
    ran: list[str] = []
    monkeypatch.setattr(plugin, "_open", lambda self: ran.append(self.format))
    reason = refused(data)
    assert ran == []
    # TGA has no signature: its first bytes may look like another format's (CUR's), never TGA's
    assert "SPIDER" not in reason and "TGA" not in reason


def test_the_issue_19_spider_file_is_permanent_even_with_every_decoder_allowed() -> None:
    everything = parse_image_formats(",".join(Image.OPEN))
    assert len(spider_like()) == 1280
    reason = refused(spider_like(), everything)
    assert reason.startswith("corrupt or truncated image: the decoder failed (AttributeError"), reason
    assert refused(spider_like()).startswith("not an image (unrecognised format)")


def test_a_format_allowed_by_name_is_read() -> None:
    assert measure(pillow_image(6, 4, "PCX"), MAX_PIXELS, ("PCX",)) == Size(6, 4)
    assert measure(tga_like(), MAX_PIXELS, ("TGA",)) == Size(8, 8)


@pytest.mark.parametrize("error", [
    AttributeError("no attribute 'stkoffset'"), KeyError("tag"), ZeroDivisionError("division by zero"),
    RecursionError("maximum recursion depth exceeded"), IndexError("tuple index out of range"),
    struct.error("unpack requires a buffer of 4 bytes"), TypeError("unsupported operand"), EOFError(),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), LookupError("x\x00y" * 100),
    RuntimeError("decoder state"), NotImplementedError(), UserWarning("Corrupt EXIF data"),
])
def test_any_exception_inside_pillow_is_a_permanent_image_error(
        monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def broken(self: Any) -> None:
        raise error
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "_open", broken)
    reason = refused(pillow_image(3, 3, "PNG"))
    assert reason.startswith("corrupt or truncated image"), reason
    assert "\x00" not in reason and len(reason) < 250


def test_memory_error_inside_pillow_is_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    def greedy(self: Any) -> None:
        raise MemoryError
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "_open", greedy)
    assert refused(pillow_image(3, 3, "PNG")).startswith("image too large")


def test_a_warning_turned_error_is_an_image_error(monkeypatch: pytest.MonkeyPatch) -> None:
    original = PngImagePlugin.PngImageFile._open

    def warns(self: Any) -> None:
        original(self)
        warnings.warn("Possibly corrupt chunk", UserWarning, stacklevel=1)
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "_open", warns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "Possibly corrupt chunk" in refused(pillow_image(3, 3, "PNG"))


def test_parse_image_formats_normalises_and_refuses_unknown_names() -> None:
    assert parse_image_formats(" jpeg, PNG ,jpeg,,") == ("JPEG", "PNG")
    with pytest.raises(ValueError, match="unknown format JPG, HEIC"):
        parse_image_formats("JPEG,JPG,HEIC")
    with pytest.raises(ValueError, match="empty"):
        parse_image_formats(" , ")


# -- failure categories -----------------------------------------------------------------------
@pytest.mark.parametrize(("reason", "category"), [
    ("store not found", "store not found"),
    ("HTTP 404 from the image server", "HTTP 4xx"), ("HTTP 418 from the image server", "HTTP 4xx"),
    ("HTTP 503 from the image server", "HTTP 5xx"), ("HTTP 302 without a Location", "HTTP 3xx"),
    ("download timed out after 30s (3 attempts)", "download timed out"),
    ("connection failed: [Errno 111] Connection refused", "connection failed"),
    ("connection error: ServerDisconnectedError: Server disconnected", "connection error"),
    ("download failed: TooManyRedirects: x", "download failed"),
    ("image too large: 9000x9000 pixels exceeds 64000000", "image too large"),
    ("image too large: more than 1000000 bytes", "image too large"),
    ("corrupt or truncated image: image file is truncated", "corrupt or truncated image"),
    ("not an image (unrecognised format)", "not an image"),
    ("format GIF not allowed (IMAGE_FORMATS: JPEG,PNG)", "format not allowed"),
    ("address not allowed: 10.0.0.1", "address not allowed"),
    ("invalid URL: bad host", "invalid URL"), ("invalid redirect location: x", "bad redirect"),
    ("redirect to a non-http URL: ftp", "bad redirect"),
    ("too many redirects (more than 3)", "too many redirects"),
    ("image has no pixels", "image has no pixels"),
    ("processing error: KeyError", "processing error"),
    ("", "other"), ("HTTP 4040404 from x", "other"), ("HTTPS", "other"), ("something new", "other"),
])
def test_failure_category(reason: str, category: str) -> None:
    assert failure_category(reason) == category


CATEGORIES = ({c for _, c in FAILURE_CATEGORIES}
              | {"HTTP 3xx", "HTTP 4xx", "HTTP 5xx", "format not allowed", FAILURE_CATEGORY_OTHER})


@given(st.one_of(st.text(max_size=80), st.builds("HTTP {} {}".format, st.integers(-10, 10**6), st.text()),
                 st.builds("format {} not allowed{}".format, st.text(), st.text())))
def test_failure_categories_are_a_fixed_small_set(reason: str) -> None:
    assert failure_category(reason) in CATEGORIES
    assert len(CATEGORIES) <= 20


# -- the simulated GPU delay ------------------------------------------------------------------
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


def test_images_are_read_with_pillow_simd_not_stock_pillow() -> None:
    """Both distributions ship the `PIL` package, so one that requires stock Pillow (matplotlib
    does; the benchmarks plot with it) would be installed over pillow-simd's files, and every
    processor would measure with it. The Makefile installs matplotlib without its dependencies."""
    import importlib.metadata

    import PIL

    assert PIL.__version__ == importlib.metadata.version("pillow-simd")
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("pillow")  # uninstalling it would delete pillow-simd's PIL files
