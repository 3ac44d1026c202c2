# The web front (Flask): slim CPU image, non-root. Build from the repository root:
#   docker build -f deploy/docker/front.Dockerfile -t talking-head/front:latest .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    FRONT_HOST=0.0.0.0 FRONT_PORT=5000 DATA_DIR=/data
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng libsndfile1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY deploy/docker/requirements-front.txt /tmp/requirements-front.txt
RUN pip install -r /tmp/requirements-front.txt
# The front validates with the model library's light modules (options, errors, image/audio/video readers).
COPY SadTalker/sadtalker/ SadTalker/sadtalker/
COPY DemoFront/ DemoFront/
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin app \
 && mkdir -p /data && chown app:app /data
USER 10001
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/livez', timeout=4)"
# DemoFront/app.py serves with waitress (one process, SERVER_THREADS request threads, READ_TIMEOUT_SECONDS),
# not Werkzeug's development server; it also delivers webhooks, so it is the only one per container. The same image
# runs the model worker beside each model service: command ["python", "DemoFront/worker.py"].
CMD ["python", "DemoFront/app.py"]
