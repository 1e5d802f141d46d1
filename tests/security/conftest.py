"""Fixtures for the security suites: a character to attack, and a check that nothing was left behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from characters.models import Character
from tests.characters.factories import CharacterFactory


@pytest.fixture
def upload_tmp(settings: Any, tmp_path: Path) -> Path:
    """Uploads spool to a folder of this test's own, so leftovers can be seen."""
    folder = tmp_path / "upload-tmp"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    return folder


@pytest.fixture
def anna(alice: Any) -> Character:
    return CharacterFactory(owner=alice, name="Anna", trigger_word="ohwx_anna")


@pytest.fixture
def alice_web(alice: Any) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def files_under(folder: Path) -> list[str]:
    """Every file below `folder`, relative to it."""
    found = []
    for root, _dirs, names in os.walk(folder):
        found.extend(os.path.relpath(os.path.join(root, name), folder) for name in names)
    return sorted(found)
