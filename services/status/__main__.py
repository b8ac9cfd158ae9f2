"""`python -m services.status`: fold the event log into job statuses and serve them."""

from services.status.app import create_app
from services.status.settings import StatusSettings
from shared.serve import build_and_serve

if __name__ == "__main__":
    settings = StatusSettings()
    build_and_serve(lambda: create_app(settings), settings, settings.status_port, nice=settings.status_nice)
