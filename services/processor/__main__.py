"""`python -m services.processor`: process image tasks (run as many as you like)."""

from services.processor.app import create_app
from services.processor.settings import ProcessorSettings
from shared.serve import build_and_serve

if __name__ == "__main__":
    settings = ProcessorSettings()
    build_and_serve(lambda: create_app(settings), settings, settings.processor_port, nice=settings.processor_nice)
