"""`python -m services.status`: fold the event log into job statuses and serve them."""

import logging
import sys

from services.status.app import create_app
from services.status.settings import StatusSettings
from shared.auth import BadApiKeys
from shared.logging import configure_logging
from shared.serve import serve

if __name__ == "__main__":
    settings = StatusSettings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        app = create_app(settings)
    except BadApiKeys as exc:  # a wrong setting, not a bug: one line that says which entry, no traceback
        logging.getLogger("services.status").critical("cannot start: %s", exc)
        sys.exit(2)
    serve(app, settings, settings.status_port, nice=settings.status_nice)
