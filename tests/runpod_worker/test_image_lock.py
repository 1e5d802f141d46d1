"""The worker image's one environment: the lock resolves for the image, and the worker imports only it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from runpod_worker.image.lock import LOCK, REQUIREMENTS_IN, Lock, LockError, check, git_pins_in, normalize

WORKER = Path(__file__).resolve().parents[2] / "runpod_worker"
# Code that runs inside the image: the handler and what it imports, the trainer runner, the smoke with the
# stand-in it drives, the tiny-model builders. (The simulator is removed from the image; the lock tool runs
# on developer machines and CI.)
IMAGE_CODE = sorted(
    path
    for path in WORKER.rglob("*.py")
    if "simulated_ai_toolkit" not in path.parts and path.name != "lock.py" and "cpu_only" not in path.parts
)
# Import names that are not their distribution's name.
DISTRIBUTION_OF = {"PIL": "pillow", "yaml": "pyyaml"}


def third_party_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("runpod_worker", "__future__")}


@pytest.mark.integration
def test_the_lock_resolves_for_the_images_python_and_platform_on_pypi() -> None:
    chosen = check()

    lock = Lock.read()
    assert chosen == {name: version for name, version in lock.pins.items() if name not in lock.sdists}
    assert chosen["torch"] == "2.13.0" and chosen["torchaudio"] == "2.11.0"


def test_a_lock_pin_that_pypi_would_not_resolve_to_fails_the_check_naming_it(tmp_path: Path) -> None:
    lock = Lock.read()
    stale = Lock(
        pins={**lock.pins, "einops": "0.0.1"}, git=lock.git, sdists=lock.sdists, requires=lock.requires
    )

    with pytest.raises(LockError) as caught:
        check(stale, timeout=120)

    assert "einops" in str(caught.value)


def test_the_lock_takes_diffusers_at_the_commit_ai_toolkit_pins() -> None:
    assert (
        Lock.read().git
        == git_pins_in()
        == {
            "diffusers": (
                "https://github.com/huggingface/diffusers.git",
                "c943837899b16cbae2f619b8dd4f7bb6f07dd81a",
            )
        }
    )


def test_the_lock_records_what_its_git_and_source_only_pins_require() -> None:
    lock = Lock.read()

    assert set(lock.requires) == set(lock.git) | set(lock.sdists)
    assert any(spec.startswith("huggingface-hub") for spec in lock.requires["diffusers"])


def test_every_input_of_the_lock_is_pinned_in_it() -> None:
    lock = Lock.read()
    for raw in REQUIREMENTS_IN.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = normalize(re.split(r"[ <>=!~@\[;]", line, maxsplit=1)[0])
        assert name in lock.names(), f"{name} is in requirements.in but not in {LOCK.name}"
        if "==" in line and "@" not in line:
            assert lock.pins[name] == line.split("==")[1], f"{name} is pinned differently in the lock"


@pytest.mark.parametrize("path", IMAGE_CODE, ids=lambda p: str(p.relative_to(WORKER)))
def test_worker_code_in_the_image_imports_only_what_the_lock_installs(path: Path) -> None:
    available = Lock.read().names()

    missing = {
        name
        for name in third_party_imports(path)
        if normalize(DISTRIBUTION_OF.get(name, name)) not in available
    }

    assert missing == set(), f"{path.name} imports {sorted(missing)}, which the image's lock does not install"


def test_the_development_requirements_of_the_worker_pin_what_the_image_pins() -> None:
    lock = Lock.read()
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", (WORKER / "requirements.txt").read_text(), re.MULTILINE)

    assert pins
    for name, version in pins:
        assert lock.pins.get(normalize(name)) == version, f"{name}=={version} is not the image's pin"
