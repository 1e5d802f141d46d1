"""The worker image's one Python environment: compile `requirements.lock`, and check it still resolves.

    python -m runpod_worker.image.lock compile --diffusers DIR [--python PYTHON3.12]
    python -m runpod_worker.image.lock check

`compile` resolves `requirements.in` in one pip pass (with the image's Python, 3.12, on this x86_64 Linux),
taking diffusers from a local clone at the pinned commit, and writes every installed distribution as an
`==` pin with the packages that pull it in. The image installs that lock with pip, `--no-deps`.

`check` needs no GitHub: it asks PyPI to resolve the lock's PyPI pins for the image (CPython 3.12 on
glibc 2.39 x86_64, Ubuntu 24.04; wheels only), together with the recorded requirements of the pins that are
not PyPI wheels (the diffusers git commit, the sdist-only packages), and fails unless exactly the lock's
versions come out. The resolver is uv's (`uv pip compile --python-platform`), which fetches metadata in
parallel: pip's own dry run (`pip install --dry-run --report --platform ... --only-binary=:all:`) answers
the same for a fully pinned set but takes about a minute for these 224 distributions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE.parent
REQUIREMENTS_IN = WORKER / "requirements.in"
LOCK = WORKER / "requirements.lock"

IMAGE_PYTHON = "3.12"
# Ubuntu 24.04 has glibc 2.39: uv accepts every manylinux wheel up to that (pip would need each older tag
# named, since it widens only manylinux2014/2010 on its own: pip/_internal/utils/compatibility_tags.py).
IMAGE_PLATFORM = "x86_64-manylinux_2_39"
PYPI = "https://pypi.org/simple"
GIT_PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+) @ git\+(?P<url>https://\S+?)@(?P<commit>[0-9a-f]{40})$")
PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+?)\s*(?:#.*)?$")
REQUIRES = re.compile(r"^#! (?P<name>[A-Za-z0-9._-]+) requires: (?P<requires>.*)$")
CHECK_TIMEOUT_S = 120.0


class LockError(Exception):
    """The lock does not resolve, or does not say what the image installs; the message says what to do."""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Lock:
    pins: dict[str, str]  # normalized name -> version, PyPI distributions
    git: dict[str, tuple[str, str]]  # normalized name -> (url, commit)
    sdists: tuple[str, ...]  # normalized names of pins PyPI has only as source distributions
    requires: dict[str, tuple[str, ...]]  # what the git and sdist pins require, recorded at compile time

    @classmethod
    def read(cls, path: Path = LOCK) -> Lock:
        pins: dict[str, str] = {}
        git: dict[str, tuple[str, str]] = {}
        sdists: list[str] = []
        requires: dict[str, tuple[str, ...]] = {}
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if match := REQUIRES.match(line):
                items = [item.strip() for item in match["requires"].split(";;") if item.strip()]
                requires[normalize(match["name"])] = tuple(items)
            elif line.startswith("#") or not line:
                continue
            elif match := GIT_PIN.match(line):
                git[normalize(match["name"])] = (match["url"], match["commit"])
            elif match := PIN.match(line):
                pins[normalize(match["name"])] = match["version"]
                if "# sdist" in line:
                    sdists.append(normalize(match["name"]))
            else:
                raise LockError(f"{path.name}: cannot read the line {raw!r}; recompile the lock.")
        return cls(pins=pins, git=git, sdists=tuple(sdists), requires=requires)

    def names(self) -> set[str]:
        return set(self.pins) | set(self.git)


def git_pins_in(path: Path = REQUIREMENTS_IN) -> dict[str, tuple[str, str]]:
    pins: dict[str, tuple[str, str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        if match := GIT_PIN.match(raw.strip()):
            pins[normalize(match["name"])] = (match["url"], match["commit"])
    return pins


# ------------------------------------------------------------------------------------------- check


def _pip_env() -> dict[str, str]:
    # The machine's pip and uv configuration (extra indexes, find-links, constraint files) must not decide
    # what the image resolves to: only PyPI and the flags below do.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1")
    env.update(UV_HTTP_TIMEOUT="20")
    return env


def _run(command: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_pip_env())
    except subprocess.TimeoutExpired as exc:
        raise LockError(
            f"No answer within {timeout:.0f} s while checking the worker lock against PyPI. "
            "Check that PyPI is reachable from this machine (proxy settings), then run again."
        ) from exc


def _pip_failure(result: subprocess.CompletedProcess[str], what: str) -> LockError:
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    detail = "\n".join(lines[-12:])
    unreachable = any(
        marker in detail
        for marker in (
            "NewConnectionError",
            "Name or service not known",
            "ConnectTimeout",
            "dns error",
            "timed out",
        )
    )
    hint = (
        "PyPI could not be reached: check the network or pip's proxy settings, then run again."
        if unreachable
        else "Recompile it with `python -m runpod_worker.image.lock compile` (runpod_worker/README.md)."
    )
    return LockError(f"The worker lock does not resolve for the image ({what}). {hint}\n{detail}")


def check(lock: Lock | None = None, *, timeout: float = CHECK_TIMEOUT_S) -> dict[str, str]:
    """Resolves the lock for the image's Python and platform; returns what came out (name -> version)."""
    lock = lock or Lock.read()
    _check_git_pins(lock)
    with tempfile.TemporaryDirectory(prefix="worker-lock-") as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text("\n".join(_check_requirements(lock)) + "\n", encoding="utf-8")
        resolved = Path(scratch) / "resolved.txt"
        command = [sys.executable, "-m", "uv", "pip", "compile", str(requirements), "-o", str(resolved),
                   "--python-version", IMAGE_PYTHON, "--python-platform", IMAGE_PLATFORM, "--no-build",
                   "--index-url", PYPI, "--no-header", "--no-annotate", "--quiet"]  # fmt: skip
        result = _run(command, timeout=timeout)
        if result.returncode != 0:
            raise _pip_failure(result, "resolving its PyPI pins for CPython 3.12, manylinux x86_64")
        chosen = {
            normalize(name): version
            for name, version in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", resolved.read_text(), re.MULTILINE)
        }
    _compare(lock, chosen)
    _check_sdists(lock, timeout=timeout)
    return chosen


def _check_requirements(lock: Lock) -> list[str]:
    lines = [f"{name}=={version}" for name, version in sorted(lock.pins.items()) if name not in lock.sdists]
    for name in (*lock.git, *lock.sdists):
        # A requirement on a git pin (lycoris-lora needs diffusers) is met by that pin, checked apart.
        lines += [spec for spec in lock.requires.get(name, ()) if _base_requirement(spec)[0] not in lock.git]
    return lines


def _compare(lock: Lock, chosen: dict[str, str]) -> None:
    expected = {name: version for name, version in lock.pins.items() if name not in lock.sdists}
    problems = [
        f"{name}: the lock says {version}, PyPI resolves {chosen.get(name, 'nothing')}"
        for name, version in sorted(expected.items())
        if chosen.get(name) != version
    ]
    problems += [
        f"{name}=={chosen[name]} is needed but not in the lock"
        for name in sorted(set(chosen) - set(expected))
    ]
    if problems:
        raise LockError(
            "The worker lock is not what its requirements resolve to; recompile it with "
            "`python -m runpod_worker.image.lock compile`:\n  " + "\n  ".join(problems)
        )


def _check_git_pins(lock: Lock) -> None:
    inputs = git_pins_in()
    if lock.git != inputs:
        raise LockError(
            f"The lock's git pins {lock.git} are not requirements.in's {inputs}; recompile the lock."
        )
    for name in lock.git:
        if name not in lock.requires:
            raise LockError(f"The lock does not record what {name} requires; recompile the lock.")


def _check_sdists(lock: Lock, *, timeout: float) -> None:
    # pip cannot resolve a source distribution for another platform without building it, so these are
    # checked to exist on PyPI at their pinned version; their requirements were resolved above.
    for name in lock.sdists:
        command = [
            sys.executable,
            "-m",
            "pip",
            "index",
            "versions",
            name,
            "--index-url",
            PYPI,
            "--timeout",
            "20",
        ]
        result = _run(command, timeout=timeout)
        versions = re.search(r"Available versions: (.*)", result.stdout)
        if result.returncode != 0 or versions is None:
            raise _pip_failure(result, f"looking up {name} on PyPI")
        if lock.pins[name] not in [v.strip() for v in versions.group(1).split(",")]:
            raise LockError(f"PyPI no longer offers {name}=={lock.pins[name]}; recompile the lock.")


# ------------------------------------------------------------------------------------------- compile


def compile_lock(*, diffusers: Path, python: str, output: Path = LOCK) -> None:
    """Resolves requirements.in in one pip pass with the image's Python and writes the lock."""
    git = git_pins_in()
    with tempfile.TemporaryDirectory(prefix="worker-lock-") as scratch:
        requirements = Path(scratch) / "requirements.in"
        requirements.write_text(_with_local_clones(git, diffusers), encoding="utf-8")
        report = Path(scratch) / "report.json"
        args = ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
        command = [python, "-m", "pip", *args, "-r", str(requirements)]
        result = subprocess.run(command, capture_output=True, text=True, env=_pip_env(), timeout=3600)
        if result.returncode != 0:
            raise _pip_failure(result, "compiling")
        items = json.loads(report.read_text(encoding="utf-8"))["install"]
    output.write_text(render_lock(items, git, python_version(python)), encoding="utf-8")


def python_version(python: str) -> str:
    code = "import platform; print(platform.python_version())"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def _with_local_clones(git: dict[str, tuple[str, str]], diffusers: Path) -> str:
    if set(git) != {"diffusers"}:
        raise LockError(f"compile knows how to take only diffusers from a local clone, not {sorted(git)}")
    _url, commit = git["diffusers"]
    head = subprocess.run(
        ["git", "-C", str(diffusers), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if head != commit:
        raise LockError(f"{diffusers} is at {head}, not the pinned diffusers commit {commit}.")
    lines = []
    for raw in REQUIREMENTS_IN.read_text(encoding="utf-8").splitlines():
        match = GIT_PIN.match(raw.strip())
        lines.append(f"{match['name']} @ {diffusers.resolve().as_uri()}" if match else raw)
    return "\n".join(lines) + "\n"


def _top_level() -> set[str]:
    names = set()
    for raw in REQUIREMENTS_IN.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            names.add(normalize(re.split(r"[ <>=!~@\[;]", line, maxsplit=1)[0]))
    return names


def _base_requirement(spec: str) -> tuple[str, str]:
    """(normalized name, marker) of one Requires-Dist entry."""
    requirement, _, marker = spec.partition(";")
    name = re.split(r"[ <>=!~(\[]", requirement.strip(), maxsplit=1)[0]
    return normalize(name), marker.strip()


def _requires(item: dict[str, object]) -> list[str]:
    return list(item["metadata"].get("requires_dist") or [])  # type: ignore[index,union-attr]


def _required_by(metadata: dict[str, dict[str, object]]) -> dict[str, set[str]]:
    """For each distribution, the others that require it (through an extra they ask for, too)."""
    extras: dict[str, set[str]] = {name: set() for name in metadata}
    for item in metadata.values():
        for spec in _requires(item):
            requirement = spec.partition(";")[0]
            if match := re.match(r"\s*([A-Za-z0-9._-]+)\s*\[([^\]]+)\]", requirement):
                extras.setdefault(normalize(match[1]), set()).update(e.strip() for e in match[2].split(","))
    via: dict[str, set[str]] = {name: set() for name in metadata}
    for name, item in metadata.items():
        for spec in _requires(item):
            required, marker = _base_requirement(spec)
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if required in via and (extra is None or extra[1] in extras.get(name, set())):
                via[required].add(f"{name}[{extra[1]}]" if extra else name)
    return via


def render_lock(items: list[dict[str, object]], git: dict[str, tuple[str, str]], python: str) -> str:
    metadata = {normalize(item["metadata"]["name"]): item for item in items}  # type: ignore[index]
    top = _top_level()
    via = _required_by(metadata)
    lines = [
        "# The worker image's whole Python environment, installed in one step with --no-deps.",
        "# Generated by `python -m runpod_worker.image.lock compile` from requirements.in; do not edit.",
        f"# Resolved by pip in one pass with CPython {python} on x86_64 Linux (the image's Python).",
        "# `via`: the packages that require a pin; `requirements.in`: a pin of ours or AI Toolkit's.",
        "",
    ]
    for name in sorted(metadata):
        item = metadata[name]
        meta = item["metadata"]  # type: ignore[index]
        sources = sorted(via[name]) + (["requirements.in"] if name in top else [])
        url = str(item["download_info"]["url"])  # type: ignore[index]
        if name in git:
            lines.append(f"{meta['name']} @ git+{git[name][0]}@{git[name][1]}")  # type: ignore[index]
        else:
            sdist = url.endswith((".tar.gz", ".zip"))
            lines.append(f"{meta['name']}=={meta['version']}" + ("  # sdist" if sdist else ""))  # type: ignore[index]
        if name in git or url.endswith((".tar.gz", ".zip")):
            requires = [
                spec
                for spec in meta.get("requires_dist") or []  # type: ignore[union-attr]
                if "extra ==" not in _base_requirement(spec)[1]
            ]
            lines.append(f"#! {meta['name']} requires: {' ;; '.join(requires)}")  # type: ignore[index]
        lines.append(f"    # via {', '.join(sources)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compile_ = commands.add_parser("compile", help="resolve requirements.in into requirements.lock")
    compile_.add_argument("--diffusers", type=Path, required=True, help="a clone at the pinned commit")
    compile_.add_argument("--python", default=f"python{IMAGE_PYTHON}", help="the image's Python")
    commands.add_parser("check", help="check that the lock resolves for the image (asks PyPI)")
    args = parser.parse_args(argv)
    try:
        if args.command == "compile":
            compile_lock(diffusers=args.diffusers, python=args.python)
            print(f"wrote {LOCK}")
        else:
            chosen = check()
            print(f"the lock resolves for CPython {IMAGE_PYTHON} manylinux x86_64: {len(chosen)} wheels")
    except LockError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
