from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STRONG_KEY = "k3y-" + "".join(chr(33 + (i * 7) % 90) for i in range(60))


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_mode_without_a_secret_key_names_the_missing_variable() -> None:
    result = run_manage("check", DJANGO_DEBUG="false", DJANGO_ALLOWED_HOSTS="studio.example.com")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=false" in result.stderr


def test_production_mode_without_allowed_hosts_names_the_missing_variable() -> None:
    result = run_manage("check", DJANGO_DEBUG="false", DJANGO_SECRET_KEY=STRONG_KEY)
    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS must be set when DJANGO_DEBUG=false" in result.stderr


def test_the_deploy_check_passes_with_no_warnings_in_production_mode() -> None:
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=STRONG_KEY,
        DJANGO_ALLOWED_HOSTS="studio.example.com",
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_env_example_documents_every_variable_the_settings_read() -> None:
    read = set(
        re.findall(r'env(?:\.[a-z]+)?\(\s*"([A-Z][A-Z0-9_]+)"', (REPO / "studio" / "settings.py").read_text())
    )
    documented = set(
        re.findall(r"^# ([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), flags=re.MULTILINE)
    )

    assert read, "the settings read no environment variables?"
    assert read - documented == set()


def test_every_line_of_env_example_is_commented_out_so_a_copy_changes_nothing() -> None:
    # An empty value is not the same as unset (DATABASE_URL= breaks the database settings).
    lines = (REPO / ".env.example").read_text().splitlines()

    assert all(not line or line.startswith("#") for line in lines)
