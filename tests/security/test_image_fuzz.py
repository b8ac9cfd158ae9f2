"""Malformed images through the real processor (issue 19): every image gets exactly one
outcome, every failure a reason, every job ends, and no processor slot stays held.

The files are mutants (byte flips, truncations, splices, overwritten header fields) of tiny
valid files in every format this Pillow can write, plus hand-made hostile headers (the SPIDER
file of the issue, TGA, a PNG 2^31 pixels wide, a TIFF whose IFDs loop, ...). They are served
by a small HTTP server this test starts, and processed by one processor with 8 slots: one
image held for ever by a retry (as in the issue) would show as a job that never ends.
`FUZZ_EXAMPLES` scales the number of files (`make soak`: 5000 -> 500 files).
"""

from __future__ import annotations

import io
import os
import random
import struct
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from PIL import Image

from deploy.devstack.net import free_port
from services.processor.domain import FAILURE_CATEGORIES, failure_category
from shared.events import FINAL_STATUSES
from tests.support.client import Client
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for

FILES = max(300, int(os.environ.get("FUZZ_EXAMPLES", "0")) // 10)
SEED = int(os.environ.get("FUZZ_SEED", "19"))
JOBS = 8
PER_VISIT = 10
STORES = ("S00339218", "S01408764")
DEADLINE_S = 90 + FILES * 0.3
# what a malformed file may fail with; "processing error" or "other" would be a bug escaping measure
FILE_CATEGORIES = {"corrupt or truncated image", "not an image", "format not allowed", "image too large",
                   "image has no pixels", "download timed out", "connection error", "connection failed"}
ENV = {"IMAGE_CACHE_TTL_S": "0", "PROCESSOR_GPU_DELAY_MS": "0", "IMAGE_ATTEMPTS": "2",
       "IMAGE_TOTAL_TIMEOUT_S": "5", "PROCESSOR_CONCURRENCY": "8"}


# -- the corpus -------------------------------------------------------------------------------
def seeds() -> dict[str, bytes]:
    """A tiny valid file in every format this Pillow can write (in the first mode it accepts),
    and a few more shapes of the formats the processor reads by default."""
    Image.init()
    out: dict[str, bytes] = {}
    for fmt in sorted(Image.SAVE):
        for mode in ("RGB", "L", "P", "1", "F", "RGBA"):
            data = _save(Image.new(mode, (5, 4), 1 if mode == "1" else 120), fmt)
            if data:
                out[fmt.lower()] = data
                break
    extras: dict[str, tuple[Image.Image, str, dict[str, Any]]] = {
        "png-rgba": (Image.new("RGBA", (6, 3), (1, 2, 3, 4)), "PNG", {}),
        "png-16bit": (Image.new("I;16", (3, 6), 300), "PNG", {}),
        "png-palette": (Image.new("P", (9, 2), 3), "PNG", {"optimize": True}),
        "jpeg-progressive": (Image.new("RGB", (17, 9), (9, 80, 200)), "JPEG", {"progressive": True}),
        "jpeg-cmyk": (Image.new("CMYK", (8, 8), (1, 2, 3, 4)), "JPEG", {}),
        "gif-animated": (Image.new("P", (7, 7), 1), "GIF",
                         {"save_all": True, "append_images": [Image.new("P", (7, 7), 2)], "loop": 0}),
        "webp-lossless": (Image.new("RGB", (6, 6), (5, 5, 5)), "WEBP", {"lossless": True}),
        "webp-animated": (Image.new("RGBA", (6, 6), (5, 5, 5, 9)), "WEBP",
                          {"save_all": True, "append_images": [Image.new("RGBA", (6, 6))]}),
        "tiff-lzw": (Image.new("RGB", (6, 5), (7, 8, 9)), "TIFF", {"compression": "tiff_lzw"}),
        "tiff-deflate": (Image.new("L", (6, 5), 7), "TIFF", {"compression": "tiff_adobe_deflate"}),
        "tiff-pages": (Image.new("RGB", (4, 4)), "TIFF",
                       {"save_all": True, "append_images": [Image.new("RGB", (2, 2))]}),
        "bmp-palette": (Image.new("P", (5, 3), 2), "BMP", {}),
    }
    for name, (image, fmt, options) in extras.items():
        data = _save(image, fmt, **options)
        if data:
            out[name] = data
    return out


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes | None:
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt, **options)
    except Exception:  # noqa: BLE001 - a mode or codec this writer lacks: try the next
        return None
    return buffer.getvalue() or None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b""))


def _spider(istack: float, imgnumber: float, size: int = 1280) -> bytes:
    header = [0.0] * 27
    header[0], header[1], header[4], header[11] = 1, 16, 1, 16
    header[12], header[21], header[22], header[23], header[26] = 5, size, size / 5, istack, imgnumber
    return struct.pack(">27f", *header).ljust(size, b"\x00")


def _tiff(entries: list[tuple[int, int, int, int]], next_ifd: int, ifd_at: int = 8) -> bytes:
    """Little-endian TIFF: one IFD at `ifd_at` with (tag, type, count, value) entries."""
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    body = b"II*\x00" + struct.pack("<I", ifd_at)
    return body.ljust(ifd_at, b"\x00") + ifd + struct.pack("<I", next_ifd) + b"\x00" * 64


def _bmp(width: int, height: int, bits: int = 24, colours: int = 0) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, 0, 2835, 2835, colours, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 14 + 40) + info + b"\x00" * 64


def _jpeg_sof(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def crafted() -> dict[str, bytes]:
    """Hand-made hostile headers."""
    tiff_size = [(256, 4, 1, 4), (257, 4, 1, 4), (258, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, 200), (279, 4, 1, 16)]
    gif_frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00;"
    return {
        "spider-issue-19": _spider(0, 1),       # AttributeError in Pillow's SPIDER decoder
        "spider-stack": _spider(2, 0),
        "spider-little-endian": struct.pack("<27f", *struct.unpack(">27f", _spider(0, 1)[:108])).ljust(1280, b"\0"),
        "tga-true-colour": struct.pack("<BBBHHBHHHHBB", 0, 0, 2, 0, 0, 0, 0, 0, 8, 8, 24, 0) + b"\x80" * 192,
        "tga-rle-huge": struct.pack("<BBBHHBHHHHBB", 0, 0, 10, 0, 0, 0, 0, 0, 65535, 65535, 32, 8) + b"\xff" * 64,
        "png-2p31-wide": _png(2**31, 1),
        "png-2p31-1-square": _png(2**31 - 1, 2**31 - 1),
        "png-zero-wide": _png(0, 10),
        "png-chunk-2p31-long": _png(4, 4, struct.pack(">I", 0x7FFFFFFF) + b"tEXt" + b"a\x00b"),
        "png-bad-crc": _png(4, 4)[:29] + b"\x00\x00\x00\x00" + _png(4, 4)[33:],
        "tiff-ifd-loops-to-itself": _tiff(tiff_size, next_ifd=8),
        "tiff-ifd-loops-via-second": _tiff(tiff_size, next_ifd=120)[:120] + _tiff(tiff_size, 8, ifd_at=8)[8:],
        "tiff-2p31-wide": _tiff([(256, 4, 1, 2**31), (257, 4, 1, 2**31)] + tiff_size[2:], next_ifd=0),
        "tiff-ifd-past-end": _tiff(tiff_size, next_ifd=0xFFFFFFF0),
        "tiff-count-huge": _tiff([(256, 4, 0x3FFFFFFF, 8), (257, 4, 1, 4)], next_ifd=0),
        "gif-huge-screen": b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0) + gif_frame,
        "gif-huge-frame": b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0, 0, 0)
                          + b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x44\x01\x00;",
        "gif-header-only": b"GIF89a" + struct.pack("<HHBBB", 3, 3, 0xF7, 0, 0),
        "bmp-negative-height": _bmp(4, -3),
        "bmp-height-minus-2p31": _bmp(4, -(2**31)),
        "bmp-width-2p31-1": _bmp(2**31 - 1, 1),
        "bmp-zero-bits": _bmp(4, 4, bits=0),
        "bmp-palette-huge": _bmp(4, 4, bits=8, colours=2**31 - 1),
        "jpeg-65535-square": _jpeg_sof(65535, 65535),
        "jpeg-zero-height": _jpeg_sof(10, 0),
        "jpeg-soi-eoi": b"\xff\xd8\xff\xd9",
        "jpeg-marker-length-0": b"\xff\xd8\xff\xe0\x00\x00" + b"\x00" * 32 + b"\xff\xd9",
        "webp-vp8x-huge-canvas": b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8X" + struct.pack("<I", 10)
                                 + b"\x00\x00\x00\x00" + b"\xff\xff\xff" + b"\xff\xff\xff",
        "webp-riff-2p32": b"RIFF\xff\xff\xff\xffWEBPVP8 " + b"\x00" * 32,
        "ico-65535-entries": b"\x00\x00\x01\x00\xff\xff" + b"\x00" * 64,
        "empty": b"",
        "one-byte": b"\xff",
        "zeros": b"\x00" * 4096,
        "html": b"<html><body>not found</body></html>",
    }


def mutate(rng: random.Random, data: bytes, other: bytes) -> bytes:
    """One random mutant of `data`: flipped bytes, a truncation, a splice with `other`,
    inserted or repeated bytes, or a header field overwritten with an extreme value."""
    kind = rng.choice(["flip", "flip", "truncate", "splice", "insert", "repeat", "field"])
    out = bytearray(data)
    if kind == "truncate" or not out:
        return bytes(out[: rng.randrange(len(out) + 1)])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(min(len(out), 64)) if rng.random() < 0.6 else rng.randrange(len(out))
            out[at] = rng.randrange(256)
    elif kind == "splice":
        return bytes(out[: rng.randrange(len(out) + 1)] + other[rng.randrange(len(other) + 1):])
    elif kind == "insert":
        at = rng.randrange(len(out) + 1)
        out[at:at] = rng.randbytes(rng.randint(1, 32))
    elif kind == "repeat":
        start = rng.randrange(len(out))
        piece = out[start: start + rng.randint(1, 64)]
        out[start:start] = piece * rng.randint(1, 20)
    else:
        value = rng.choice([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, len(out), 2**31 - 8])
        at = rng.randrange(max(1, min(len(out), 96) - 3))
        out[at: at + 4] = struct.pack(rng.choice(["<I", ">I"]), value)
    return bytes(out)


def corpus(count: int = FILES, seed: int = SEED) -> dict[str, bytes]:
    """`count` files: the crafted ones, the valid seeds, then seeded mutants of the seeds."""
    rng = random.Random(seed)
    valid = seeds()
    files = {f"crafted-{k}": v for k, v in crafted().items()}
    files.update({f"valid-{k}": v for k, v in valid.items()})
    names = sorted(valid)
    while len(files) < count:
        name = rng.choice(names)
        files[f"mutant-{len(files):05d}-{name}"] = mutate(rng, valid[name], valid[rng.choice(names)])
    return dict(list(files.items())[:count])


# -- the stack and the file server ------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def files() -> Iterator[tuple[str, dict[str, bytes]]]:
    """The corpus, served at http://127.0.0.1:<port>/<name> by a server in a thread."""
    served = corpus()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = served.get(unquote(self.path.lstrip("/")))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, name="fuzz-files", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def fuzz_client(infra: Infra) -> Iterator[Client]:
    running = Stack(infra, env=ENV)
    try:
        yield Client(running, running.start_all(processors=1))
    finally:
        running.stop()


# -- the test ---------------------------------------------------------------------------------
@pytest.mark.timeout(int(240 + DEADLINE_S))
def test_malformed_images_all_end_with_one_outcome_and_no_slot_held(
        fuzz_client: Client, files: tuple[str, dict[str, bytes]]) -> None:
    base, served = files
    names = list(served)
    jobs = {fuzz_client.submit_ok(_job(base, chunk)): chunk for chunk in _split(names, JOBS)}

    statuses = _wait_all_final(fuzz_client, jobs, served)
    reasons: dict[str, str | None] = {}
    for job_id, chunk in jobs.items():
        rows = fuzz_client.result_rows(job_id)
        assert len(rows) == len(chunk) == len({r[0] for r in rows}), (job_id, len(rows), len(chunk))
        for name, (_, _, width, height, perimeter, error) in zip(chunk, rows, strict=True):
            if error is None:
                assert width > 0 and height > 0 and perimeter == 2 * (width + height), (name, width, height)
            else:
                assert error.strip(), f"{name}: failed without a reason"
            reasons[name] = error
        assert statuses[job_id] == ("failed" if any(reasons[n] for n in chunk) else "completed")

    histogram = Counter(failure_category(r) if r else "succeeded" for r in reasons.values())
    print(f"\n{len(served)} fuzzed files (seed {SEED}):", dict(histogram.most_common()))
    print("reasons:", dict(Counter((r or "succeeded")[:70] for r in reasons.values()).most_common()))
    unexpected = {n: r for n, r in reasons.items() if r and failure_category(r) not in FILE_CATEGORIES}
    assert not unexpected, f"failures that escaped measure's reasons: {unexpected}"
    assert reasons["crafted-spider-issue-19"], "the SPIDER file of issue 19 must fail"
    assert not reasons["valid-png"] and not reasons["valid-jpeg"]

    _assert_processor_free(fuzz_client)


def _job(base: str, names: list[str]) -> dict[str, Any]:
    visits = [{"store_id": STORES[i % 2], "visit_time": "10:00",
               "image_url": [f"{base}/{n}" for n in names[at: at + PER_VISIT]]}
              for i, at in enumerate(range(0, len(names), PER_VISIT))]
    return {"count": len(visits), "visits": visits}


def _split(names: list[str], parts: int) -> list[list[str]]:
    size = -(-len(names) // parts)
    return [names[at: at + size] for at in range(0, len(names), size)]


def _wait_all_final(client: Client, jobs: dict[str, list[str]], served: dict[str, bytes]) -> dict[str, str]:
    """Every job's final status; on the deadline, the files without an outcome are saved under
    /tmp and named in the failure (a decoder hanging in C cannot be interrupted: find it there)."""
    def probe() -> dict[str, str] | None:
        statuses = {job_id: client.status(job_id).json().get("status") for job_id in jobs}
        return statuses if all(s in set(FINAL_STATUSES) - {"cancelled"} for s in statuses.values()) else None
    try:
        return wait_for(probe, DEADLINE_S, f"all {len(jobs)} fuzz jobs to finish", every_s=0.5)
    except AssertionError as exc:
        stuck = Path(tempfile.mkdtemp(prefix="imagejobs-fuzz-stuck-"))
        for job_id, chunk in jobs.items():
            done = {row[0] for row in client.result_rows(job_id)}
            for index, name in enumerate(chunk):
                if f"{job_id}:{index // PER_VISIT}:{index % PER_VISIT}" not in done:
                    (stuck / name).write_bytes(served[name])
        raise AssertionError(f"{exc}; files without an outcome saved in {stuck}") from None


def _assert_processor_free(client: Client) -> None:
    """Healthy, nothing in flight, failure labels from the fixed set, and a good job still runs."""
    processor = next(p for p in client.stack.processes if p.name == "processor")
    assert processor.process.poll() is None, processor.log_tail()

    def idle() -> dict[str, Any] | None:
        response = httpx.get(processor.url + "/readyz", timeout=5)
        body = response.json()
        return body if response.status_code == 200 and body.get("in_flight") == 0 else None
    wait_for(idle, 30, "the processor to be ready with nothing in flight", every_s=0.2)

    metrics = httpx.get(processor.url + "/metrics", timeout=5).text
    labels = {line.split('reason="', 1)[1].split('"', 1)[0] for line in metrics.splitlines()
              if line.startswith("imagejobs_processor_failures_total{")}
    allowed = {c for _, c in FAILURE_CATEGORIES} | {"HTTP 3xx", "HTTP 4xx", "HTTP 5xx", "format not allowed", "other"}
    assert labels and labels <= allowed, labels

    started = time.monotonic()
    good = {"count": 1, "visits": [{"store_id": STORES[0], "image_url": [client.image(7, 9)], "visit_time": "10:00"}]}
    final = client.wait_final(client.submit_ok(good), deadline_s=30)
    assert final["status"] == "completed", (final, time.monotonic() - started)
