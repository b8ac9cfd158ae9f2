"""`python -m services.sample_images`: serve generated images on SAMPLE_IMAGES_PORT (8090)."""

import logging
import os

from aiohttp import web

from services.sample_images.server import create_app

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ.get("SAMPLE_IMAGES_PORT", 8090)),
                print=None, access_log=None)
