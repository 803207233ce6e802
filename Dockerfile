# syntax=docker/dockerfile:1
# stemdaq: 4D-STEM acquisition service. Build from the repository root:
#   docker build -t stemdaq .
#   docker run -p 8000:8000 -v stemdaq-data:/data stemdaq

# --- builder: wheels for stemdaq and every dependency --------------------------------------------
FROM python:3.11-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY clients ./clients
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: slim, no compilers, non-root ------------------------------------------------------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    HDF5_USE_FILE_LOCKING=FALSE \
    STEMDAQ_DATA_DIR=/data \
    STEMDAQ_API__HOST=0.0.0.0 \
    STEMDAQ_API__PORT=8000
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels stemdaq \
    && python -Ic "import stemdaq.api.app, stemdaq_client, h5py, hdf5plugin" \
    && python -Ic "import stemdaq.receiver.blockwalk as b; assert b.COMPILED and b.image, 'stemdaq._hotpath not compiled'" \
    && python -Ic "import stemdaq.rank.lane as l; assert l.BUILT, 'stemdaq._lane not compiled'"
RUN groupadd --system --gid 1000 stemdaq \
    && useradd --system --uid 1000 --gid stemdaq --home-dir /home/stemdaq --create-home stemdaq \
    && mkdir -p /data && chown stemdaq:stemdaq /data
USER stemdaq
WORKDIR /home/stemdaq
VOLUME ["/data"]
# 8000: REST API; the detector stream is an outgoing ZeroMQ connection (no port to publish)
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STEMDAQ_API__PORT', '8000') + '/healthz', timeout=2)"]
# uvicorn shuts down cleanly on SIGINT: a running acquisition is aborted and its file closed
STOPSIGNAL SIGINT
CMD ["stemdaq", "serve", "--host", "0.0.0.0", "--data-dir", "/data"]
