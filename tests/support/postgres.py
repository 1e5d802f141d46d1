"""A throw-away PostgreSQL cluster of a test's own, which the test may stop and restart for real.

    cluster = PostgresCluster.create()   # initdb in a scratch folder, not started yet
    cluster.start()
    cluster.create_database("studio")
    url = cluster.url("studio")          # postgres://postgres@127.0.0.1:<port>/studio
    with cluster.stopped():              # a fast shutdown; new connections are refused in here
        ...
    cluster.restart(down_for=2.0)        # the same as a block that waits 2 s
    cluster.cleanup()                    # stop at once, then delete the folder

The shared server on this machine is never touched. The cluster trusts every local connection, listens
on 127.0.0.1 only (a free port) with its Unix socket in its own folder, and runs without fsync: its data
is thrown away. `postgres` runs in its own process group, which `stop()` and `cleanup()` end.

initdb and postgres refuse to run as root. Under root (containers, CI) they run as the `postgres` system
user, in a scratch folder under the system's temporary directory handed to that user (pytest's own
temporary folders are private to root, so they cannot live there); as anyone else they run as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from tests.support.ports import free_port
from tests.support.processes import kill_group, log_tails, spawn

SUPERUSER = "postgres"
SERVICE_ACCOUNT = "postgres"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (initdb, postgres) are not installed, or cannot run here."""


def find_bindir() -> Path:
    """The folder holding `initdb` and `postgres`: pg_config's answer, else the newest Debian-style
    install, else whatever is on PATH."""
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        answer = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        candidates.append(Path(answer.stdout.strip()))
    # pg_config may come from the client library package alone; the server lives beside it.
    candidates += sorted(
        (Path(found) for found in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda path: _version_key(path.parent.name),
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise PostgresUnavailable(
        "the PostgreSQL server binaries (initdb, postgres) are not installed: "
        "install the `postgresql` package (or put its bin folder on PATH)"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


class PostgresCluster:
    def __init__(self, *, bindir: Path, workdir: Path, port: int, account: pwd.struct_passwd | None) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.port = port
        # The system user the server runs as when this process is root; None: this process's own user.
        self.account = account
        self.process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------------- set-up

    @classmethod
    def create(cls, *, port: int | None = None) -> PostgresCluster:
        """initdb a new cluster in a scratch folder (not started). Raises PostgresUnavailable."""
        bindir = find_bindir()
        account = _service_account() if os.geteuid() == 0 else None
        workdir = Path(tempfile.mkdtemp(prefix="studio-pg-"))
        if account is not None:
            os.chown(workdir, account.pw_uid, account.pw_gid)
        cluster = cls(bindir=bindir, workdir=workdir, port=port or free_port(), account=account)
        try:
            cluster._initdb()
        except BaseException:
            cluster.cleanup()
            raise
        return cluster

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres", *, timeout: float = 3.0) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.url(database).replace("postgres://", "postgresql://", 1),
            connect_timeout=max(1, int(timeout)),
            autocommit=True,
        )

    def create_database(self, name: str) -> None:
        with self.connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')

    def _initdb(self) -> None:
        command = [
            str(self.bindir / "initdb"), f"--pgdata={self.data_dir}", f"--username={SUPERUSER}",
            "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, **self._as_owner())
        if finished.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({finished.returncode}):\n{self.logs()}")

    def _as_owner(self) -> dict[str, Any]:
        """Popen arguments that run a command as the cluster's owner, from a folder it may enter."""
        options: dict[str, Any] = {"cwd": self.workdir, "env": _server_environment()}
        if self.account is not None:
            options.update(user=self.account.pw_uid, group=self.account.pw_gid, extra_groups=[])
        return options

    # ------------------------------------------------------------------------- lifecycle

    def start(self, *, timeout: float = 30.0) -> PostgresCluster:
        """Start the server and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return self
        command = [
            str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.workdir}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]  # fmt: skip
        self.process = spawn(command, log_path=self.log_path, **self._as_owner())
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start ({self.process.returncode}):\n{self.logs()}")
            # Accepting TCP is not enough: during start-up the server answers "starting up" and hangs up.
            with contextlib.suppress(psycopg.OperationalError), self.connect(timeout=1) as connection:
                connection.execute("SELECT 1")
                return
            time.sleep(0.05)
        raise TimeoutError(f"postgres did not accept connections in {timeout}s:\n{self.logs()}")

    def stop(self, *, immediate: bool = False, timeout: float = 30.0) -> None:
        """A fast shutdown (SIGINT): open transactions are rolled back, every client is disconnected, and
        a checkpoint is written. `immediate` (SIGQUIT) skips the checkpoint, as a crash would."""
        if self.process is None:
            return
        if self.process.poll() is None:
            # To the postmaster alone, as pg_ctl does: to a backend SIGINT means "cancel the query".
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGQUIT if immediate else signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        # Backends and auxiliary processes share the postmaster's group; nothing may outlive it.
        kill_group(self.process)
        self.process = None

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The server is down inside the block (connections refused) and back up, ready, after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def restart(self, *, down_for: float = 0.0) -> None:
        """Stop (fast shutdown), stay down `down_for` seconds, start again and wait until ready."""
        with self.stopped():
            if down_for > 0:
                time.sleep(down_for)  # the length of the outage itself, not a wait for a condition

    def cleanup(self) -> None:
        self.stop(immediate=True)  # the data is thrown away: no checkpoint to wait for
        shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self) -> str:
        return log_tails(self.log_path)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _service_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_ACCOUNT)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root, and there is no `{SERVICE_ACCOUNT}` system user to run initdb and postgres "
            "as (they refuse root); install the `postgresql` package, which creates it"
        ) from None


def _server_environment() -> dict[str, str]:
    # The test's own PG* variables (PGHOST, PGPORT, PGDATA…) must not steer the throw-away server.
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}
