"""`python -m services.ingest`: serve the ingest API on INGEST_PORT."""

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.serve import build_and_serve

if __name__ == "__main__":
    settings = IngestSettings()
    build_and_serve(lambda: create_app(settings), settings, settings.ingest_port, nice=settings.ingest_nice)
