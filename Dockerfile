# Imagineer web and worker image. Build: docker build -t imagineer .
# The same image runs the web server (default command) and the RQ workers (see compose.yaml).

FROM node:22-bookworm-slim AS frontend
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=imagineer.settings.base \
    IMAGINEER_DATA_DIR=/data
WORKDIR /app
# libgl is not needed: no OpenCV. libglib/libgomp are for onnxruntime and torch.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt ./
# torch first, exactly pinned (pass --build-arg TORCH_INDEX=... to choose a CPU or CUDA build).
ARG TORCH_INDEX=""
RUN pip install ${TORCH_INDEX:+--index-url $TORCH_INDEX} "torch==2.13.0" \
    && pip install -r requirements.txt
COPY --from=frontend /src/node_modules ./node_modules
COPY . .
RUN groupadd --system imagineer && useradd --system --gid imagineer --home /app imagineer \
    && mkdir -p /data && chown imagineer:imagineer /data \
    && DEBUG=0 SECRET_KEY=collectstatic-only IMAGINEER_DATA_DIR=/tmp/build python manage.py collectstatic --noinput \
    && chown -R imagineer:imagineer /tmp/build
ENV IMAGINEER_STATIC_ROOT=/tmp/build/static
USER imagineer
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz').status == 200 else 1)"
CMD ["gunicorn", "imagineer.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "--timeout", "120", "--access-logfile", "-"]
