# One image for every imagejobs service (the command picks the service): Debian's Python 3.11
# with the project in a virtualenv. pillow-simd is compiled in the build stage; the runtime
# stage has only the shared libraries it links against.
FROM debian:bookworm-slim AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
        python3 python3-venv python3-dev build-essential ca-certificates \
        libjpeg62-turbo-dev zlib1g-dev libwebp-dev \
    && rm -rf /var/lib/apt/lists/*
# Certificate authorities of a TLS-inspecting proxy between this host and PyPI, if any
# (deploy/docker/extra-ca/*.crt; none by default); pip is told to trust the system store.
COPY deploy/docker/extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
# The dependencies first, from pyproject alone, so a source change rebuilds one small layer.
COPY pyproject.toml README.md /src/
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
        >/src/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip /opt/venv/bin/pip install -q -r /src/requirements.txt
COPY shared /src/shared
COPY services /src/services
COPY imagejobs_client /src/imagejobs_client
COPY deploy/*.py /src/deploy/
COPY deploy/devstack /src/deploy/devstack
RUN /opt/venv/bin/pip install -q --no-deps --no-cache-dir /src

FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
        python3 libjpeg62-turbo zlib1g libwebp7 libwebpdemux2 libwebpmux3 tzdata \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
COPY data /app/data
RUN /opt/venv/bin/python -c "from PIL import features as f; assert all(f.check(c) for c in ('jpg', 'zlib', 'webp'))"
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HTTP_HOST=0.0.0.0
USER nobody
CMD ["python", "-m", "services.ingest"]
