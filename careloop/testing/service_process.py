"""A real server process for tests: found, configured in a temporary directory, started, awaited, stopped.

The launchers for Mosquitto and influxd build on `ServiceProcess`; it owns the process, its log file and the
free ports, and can stop (SIGTERM), kill (SIGKILL) and restart it on the same ports, for outage tests.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

# Every started, not yet closed service, so that a run that ends without closing them (an error in a script, a
# KeyboardInterrupt) does not leave servers behind. A SIGKILLed run still can: nothing runs after that.
_started: set[ServiceProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    for service in list(_started):
        service.close()


class ServiceNotInstalled(RuntimeError):
    """The server binary is missing; the message says how to install it."""


class ServiceFailed(RuntimeError):
    """The server did not start or did not become ready; the message ends with the tail of its log."""


def find_binary(name: str, *candidates: str) -> str | None:
    """The first of `candidates` that is an executable file, else `name` on PATH, else None."""
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


class ServiceProcess:
    """Base of the launchers: subclasses write the config in `_prepare()` and say when ready in `_is_ready()`."""

    #: Shown in messages, e.g. "Mosquitto".
    name = "service"
    host = "127.0.0.1"

    def __init__(self, *, workdir: Path | None = None, start_timeout_s: float = 20.0) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"careloop-{self.name.lower()}-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name.lower()}.log"
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._prepared = False

    # -- to implement -------------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Write the configuration files into `workdir` (called once, before the first start)."""
        raise NotImplementedError

    def _command(self) -> list[str]:
        """The command line that runs the server in the foreground."""
        raise NotImplementedError

    def _is_ready(self) -> bool:
        """Whether the started server serves requests yet."""
        raise NotImplementedError

    def _after_first_start(self) -> None:
        """Set-up that needs the running server (e.g. creating an admin user); called once."""

    # -- lifecycle ----------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return self._process.pid if self.running and self._process is not None else None

    def start(self) -> Self:
        """Start the server and wait until it is ready; raises ServiceFailed with its log if it is not."""
        if self.running:
            return self
        first = not self._prepared
        if first:
            self._prepare()
            self._prepared = True
        with open(self.log_path, "ab") as log:
            log.write(f"--- careloop: starting {' '.join(self._command())}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # a Ctrl-C on the test run does not hit the server before cleanup
            )
        _started.add(self)
        deadline = time.monotonic() + self.start_timeout_s
        while not self._is_ready():
            if self._process.poll() is not None:
                raise ServiceFailed(f"{self.name} exited with status {self._process.returncode}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceFailed(f"{self.name} not ready after {self.start_timeout_s} s\n{self.log_tail()}")
            time.sleep(0.02)
        if first:
            self._after_first_start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL after `timeout_s`); it saves its state."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Kill the server (SIGKILL), as a crash or power cut would: nothing is saved on the way out."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()

    def restart(self) -> Self:
        """Stop gracefully and start again on the same ports with the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and delete the temporary directory (if this object created it)."""
        self.stop()
        _started.discard(self)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log, for error messages."""
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(text[-lines:])
        return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
