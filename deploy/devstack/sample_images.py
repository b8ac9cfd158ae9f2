"""`python -m deploy.devstack.sample_images`: a local image server for the demo, the tests and
the benchmarks (these machines have no internet), on SAMPLE_IMAGES_PORT (8090). Development
tooling, not part of the product. Images are generated on request and cached:

- `/img/{W}x{H}.{jpg|png|webp|gif}`: a W×H image of that format
- `/webp/gallery/{n}.jpg`: the images of the example job (data/example-job.json, the API
  document's example), stand-ins for the original request's gstatic URLs
- `/status/{code}`: that HTTP status; `/flaky/{key}/{n}/{W}x{H}.png`: 500 for the first n
  requests of `key`, then the image; `/reset/{key}/{n}/{W}x{H}.png`: drops the connection the
  first n times; `/slow/{ms}/{W}x{H}.png`: answers after `ms`
- `/garbage.jpg`: bytes that are not an image, served as image/jpeg
- hostile: `/bomb.png` (a tiny PNG declaring 100,000 x 100,000 pixels), `/truncated.jpg`,
  `/big/{n}.png` (n bytes streamed; `_stats` counts bytes actually sent), `/dribble.png`
  (one byte every 100 ms, for ten minutes: a slow-loris server)
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
import zlib
from collections import Counter
from functools import lru_cache

from aiohttp import web
from aiohttp.typedefs import Handler
from PIL import Image

GALLERY = {1: (550, 368), 2: (550, 404), 3: (1280, 720), 4: (1024, 772), 5: (1024, 752)}
FORMATS = {"jpg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png"),
           "webp": ("WEBP", "image/webp"), "gif": ("GIF", "image/gif")}
MAX_SIDE = 10_000


@lru_cache(maxsize=256)
def render(width: int, height: int, fmt: str) -> bytes:
    image = Image.new("RGB", (width, height), ((width * 7) % 256, (height * 13) % 256, 120))
    out = io.BytesIO()
    image.save(out, FORMATS[fmt][0])
    return out.getvalue()


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", text)
    if not match:
        raise web.HTTPNotFound()
    w, h = int(match.group(1)), int(match.group(2))
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise web.HTTPNotFound()
    return w, h


def _image(width: int, height: int, fmt: str) -> web.Response:
    if fmt not in FORMATS:
        raise web.HTTPNotFound()
    return web.Response(body=render(width, height, fmt), content_type=FORMATS[fmt][1])


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring a huge image, with almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


HITS: web.AppKey[Counter[str]] = web.AppKey("hits", Counter)


@web.middleware
async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
    request.app[HITS][request.path] += 1
    return await handler(request)


async def img(request: web.Request) -> web.Response:
    w, h = _size(request.match_info["size"])
    return _image(w, h, request.match_info["fmt"])


async def gallery(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    if n not in GALLERY:
        raise web.HTTPNotFound()
    return _image(*GALLERY[n], "jpg")


async def status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="status\n")


async def flaky(request: web.Request) -> web.Response:
    key = f"flaky:{request.match_info['key']}"
    request.app[HITS][key] += 1
    if request.app[HITS][key] <= int(request.match_info["n"]):
        return web.Response(status=500, text="try again\n")
    return _image(*_size(request.match_info["size"]), "png")


async def reset(request: web.Request) -> web.StreamResponse:
    key = f"reset:{request.match_info['key']}"
    request.app[HITS][key] += 1
    if request.app[HITS][key] <= int(request.match_info["n"]):
        assert request.transport is not None
        request.transport.close()  # the client sees the connection drop mid-request
        raise web.HTTPInternalServerError()
    return _image(*_size(request.match_info["size"]), "png")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(int(request.match_info["ms"]) / 1000)
    return _image(*_size(request.match_info["size"]), "png")


async def garbage(_: web.Request) -> web.Response:
    return web.Response(body=b"this is not an image" * 10, content_type="image/jpeg")


async def bomb(_: web.Request) -> web.Response:
    return web.Response(body=bomb_png(), content_type="image/png")


async def truncated(_: web.Request) -> web.Response:
    whole = render(400, 300, "jpg")
    return web.Response(body=whole[: len(whole) // 2], content_type="image/jpeg")


async def big(request: web.Request) -> web.StreamResponse:
    total = int(request.match_info["n"])
    response = web.StreamResponse(headers={"Content-Type": "image/png"})  # no length: streamed
    await response.prepare(request)
    chunk = b"\0" * 65536
    try:
        while request.app[HITS]["big-bytes-sent"] < total:
            await response.write(chunk)
            request.app[HITS]["big-bytes-sent"] += len(chunk)
    except (ConnectionResetError, ConnectionError):
        return response
    await response.write_eof()
    return response


async def dribble(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    await response.prepare(request)
    try:
        for _ in range(6000):
            await response.write(b"\x89")
            await asyncio.sleep(0.1)
    except (ConnectionResetError, ConnectionError):
        pass
    return response


async def stats(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[HITS]))


def create_app() -> web.Application:
    app = web.Application(middlewares=[count])
    app[HITS] = Counter()
    app.router.add_get(r"/img/{size}.{fmt}", img)
    app.router.add_get(r"/webp/gallery/{n:\d+}.jpg", gallery)
    app.router.add_get(r"/status/{code:\d{3}}", status)
    app.router.add_get(r"/flaky/{key}/{n:\d+}/{size}.png", flaky)
    app.router.add_get(r"/reset/{key}/{n:\d+}/{size}.png", reset)
    app.router.add_get(r"/slow/{ms:\d+}/{size}.png", slow)
    app.router.add_get("/garbage.jpg", garbage)
    app.router.add_get("/bomb.png", bomb)
    app.router.add_get("/truncated.jpg", truncated)
    app.router.add_get(r"/big/{n:\d+}.png", big)
    app.router.add_get("/dribble.png", dribble)
    app.router.add_get("/_stats", stats)
    app.router.add_get("/healthz", lambda _: web.json_response({"status": "ok"}))
    return app


if __name__ == "__main__":
    import logging
    import os

    logging.basicConfig(level=logging.WARNING)
    # SAMPLE_IMAGES_HOST: 0.0.0.0 in the compose `demo` profile, where processors reach it by name
    host, port = os.environ.get("SAMPLE_IMAGES_HOST", "127.0.0.1"), int(os.environ.get("SAMPLE_IMAGES_PORT", 8090))
    web.run_app(create_app(), host=host, port=port,
                print=None, access_log=None)
