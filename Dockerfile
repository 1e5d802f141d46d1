# The web app and the Celery worker/beat share this image:
#   web:    (default CMD) gunicorn
#   worker: celery -A studio worker --loglevel=INFO
#   beat:   celery -A studio beat --loglevel=INFO
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system studio && useradd --system --gid studio --home-dir /app studio

WORKDIR /app
COPY requirements.txt .
# face-recognition-models also holds dlib's 68-point landmark model (100 MB), which the studio never loads
# and whose training data (iBUG 300-W) is licensed for research only: it is removed (docs/IDENTITY.md).
RUN pip install -r requirements.txt \
    && python -c "import importlib.util, pathlib; \
folder = pathlib.Path(importlib.util.find_spec('face_recognition_models').submodule_search_locations[0]); \
(folder / 'models' / 'shape_predictor_68_face_landmarks.dat').unlink()"

COPY --chown=studio:studio . .
# collectstatic needs settings to import; these values are only for the build step.
RUN DJANGO_DEBUG=false DJANGO_SECRET_KEY=build-only-not-secret DJANGO_ALLOWED_HOSTS=build \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/var && chown studio:studio /app/var

USER studio
EXPOSE 8000
# Ask as the proxy would (an allowed host, already https), so ALLOWED_HOSTS and the SSL redirect pass.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; host = os.environ.get('DJANGO_ALLOWED_HOSTS', 'localhost').split(',')[0]; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:8000/healthz', headers={'Host': host, 'X-Forwarded-Proto': 'https'}), timeout=4)"
# Bind, workers, timeout and an access log with run tokens and signed links redacted: gunicorn.conf.py.
CMD ["gunicorn", "--config", "gunicorn.conf.py", "studio.wsgi:application"]
