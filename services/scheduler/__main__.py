"""`python -m services.scheduler`: hold jobs until their time, then emit their tasks."""

from services.scheduler.app import create_app
from services.scheduler.settings import SchedulerSettings
from shared.serve import build_and_serve

if __name__ == "__main__":
    settings = SchedulerSettings()
    build_and_serve(lambda: create_app(settings), settings, settings.scheduler_port, nice=settings.scheduler_nice)
