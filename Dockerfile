# One image for the worker and the producer (different commands).
# Build stage: a venv with the project and its dependencies; the runtime stage copies only
# the venv, so pip caches and build tools stay out of the image.
FROM python:3.12-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY requirements-*.txt ./
COPY worker ./worker
COPY producer ./producer
# The producer's extra too: compose's producer service (demo, experiment, plan) runs from this image.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check '.[producer]'

FROM python:3.12-slim
RUN useradd --system --uid 10001 --user-group --home-dir /app --create-home poolq
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WORKER_METRICS_ADDRESS=0.0.0.0 \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
USER poolq
# The worker drains on SIGTERM (finishes or re-queues running jobs within WORKER_SHUTDOWN_TIMEOUT).
STOPSIGNAL SIGTERM
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "worker", "--check", "--require-worker"]
CMD ["python", "-m", "worker"]
