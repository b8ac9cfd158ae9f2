"""`python -m services.ingest`: serve the ingest API on INGEST_PORT."""

import logging
import sys

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.auth import BadApiKeys
from shared.logging import configure_logging
from shared.serve import serve

if __name__ == "__main__":
    settings = IngestSettings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        app = create_app(settings)
    except BadApiKeys as exc:  # a wrong setting, not a bug: one line that says which entry, no traceback
        logging.getLogger("services.ingest").critical("cannot start: %s", exc)
        sys.exit(2)
    serve(app, settings, settings.ingest_port, nice=settings.ingest_nice)
