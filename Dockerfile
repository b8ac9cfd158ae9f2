# One image for every imagejobs service; the command picks the service.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential libjpeg-dev zlib1g-dev libwebp-dev libpng-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY data ./data
RUN pip install --no-cache-dir . && python -c "from PIL import features; assert features.check('webp')"
USER nobody
ENV PYTHONUNBUFFERED=1 HTTP_HOST=0.0.0.0
CMD ["python", "-m", "services.ingest"]
