"""Imported by the tests' Celery workers (`--include`, tests/support/celery_worker.py): the face engine
answers from the run's shared memo (tests/support/face_memo.py), so a photo every live stack's character
uploads is analysed once per run, not once per stack."""

from __future__ import annotations

import os

from characters.faces import engine
from tests.support.face_memo import FOLDER_VARIABLE, remembered_engine

for _name, _function in remembered_engine(os.environ.get(FOLDER_VARIABLE)).items():
    setattr(engine, _name, _function)
