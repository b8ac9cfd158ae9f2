"""A local image server for the demo, the tests and the benchmarks (these machines have no
internet). Images are generated on request and cached:

- `/img/{W}x{H}.{jpg|png|webp|gif}`: a W×H image of that format
- `/webp/gallery/{n}.jpg`: stand-ins for the DESIGN example's gstatic URLs
- `/status/{code}`: that HTTP status; `/flaky/{key}/{n}/{W}x{H}.png`: 500 for the first n
  requests of `key`, then the image; `/reset/{key}/{n}/{W}x{H}.png`: drops the connection the
  first n times; `/slow/{ms}/{W}x{H}.png`: answers after `ms`
- `/garbage.jpg`: bytes that are not an image, served as image/jpeg
"""

from __future__ import annotations

import asyncio
import io
import re
from collections import Counter
from functools import lru_cache

from aiohttp import web
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


def create_app() -> web.Application:
    app = web.Application()
    hits: Counter[str] = Counter()
    app["hits"] = hits

    @web.middleware
    async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
        hits[request.path] += 1
        return await handler(request)

    app.middlewares.append(count)

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
        hits[key] += 1
        if hits[key] <= int(request.match_info["n"]):
            return web.Response(status=500, text="try again\n")
        return _image(*_size(request.match_info["size"]), "png")

    async def reset(request: web.Request) -> web.StreamResponse:
        key = f"reset:{request.match_info['key']}"
        hits[key] += 1
        if hits[key] <= int(request.match_info["n"]):
            assert request.transport is not None
            request.transport.close()  # the client sees the connection drop mid-request
            raise web.HTTPInternalServerError()
        return _image(*_size(request.match_info["size"]), "png")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return _image(*_size(request.match_info["size"]), "png")

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(body=b"this is not an image" * 10, content_type="image/jpeg")

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(dict(hits))

    app.router.add_get(r"/img/{size}.{fmt}", img)
    app.router.add_get(r"/webp/gallery/{n:\d+}.jpg", gallery)
    app.router.add_get(r"/status/{code:\d{3}}", status)
    app.router.add_get(r"/flaky/{key}/{n:\d+}/{size}.png", flaky)
    app.router.add_get(r"/reset/{key}/{n:\d+}/{size}.png", reset)
    app.router.add_get(r"/slow/{ms:\d+}/{size}.png", slow)
    app.router.add_get("/garbage.jpg", garbage)
    app.router.add_get("/_stats", stats)
    app.router.add_get("/healthz", lambda _: web.json_response({"status": "ok"}))
    return app
