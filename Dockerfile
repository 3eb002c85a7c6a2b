# Computations Orchestrator: aiohttp service started with `orchestrator serve`.
FROM python:3.11-slim

# UID/GID of the runtime user; match them to the host owner of the
# bind-mounted ./logs and ./results directories if that is not 1000.
ARG APP_UID=1000
ARG APP_GID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=5000 \
    LOG_DIR=/app/logs \
    RESULTS_SAVE_PATH=/app/results

WORKDIR /app

RUN groupadd --system --gid "${APP_GID}" app \
    && useradd --system --no-log-init --uid "${APP_UID}" --gid app \
        --home-dir /app --no-create-home --shell /usr/sbin/nologin app

COPY setup.py pyproject.toml ./
COPY orchestrator/ ./orchestrator/
COPY static/ ./static/

# Install the local package (dependency ranges come from setup.py).
# The build leaves build/ and *.egg-info in the source tree; drop them.
RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info \
    && mkdir -p "${LOG_DIR}" "${RESULTS_SAVE_PATH}" \
    && chown app:app "${LOG_DIR}" "${RESULTS_SAVE_PATH}"

# Numeric so runtimes can verify the user is non-root (runAsNonRoot).
USER ${APP_UID}:${APP_GID}

EXPOSE 5000

# No curl in the slim image: probe /healthz with the standard library.
# urlopen raises (non-zero exit) on connection errors and non-2xx replies.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '5000') + '/healthz', timeout=4)"]

CMD ["orchestrator", "serve"]
