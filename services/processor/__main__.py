"""`python -m services.processor`: process image tasks (run as many as you like)."""

from services.processor.app import create_app
from services.processor.settings import ProcessorSettings
from shared.serve import serve

if __name__ == "__main__":
    settings = ProcessorSettings()
    serve(create_app(settings), settings, settings.processor_port, nice=settings.processor_nice)
