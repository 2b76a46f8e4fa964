"""What keeps a run's output folder honest while it is written: one run per folder, and signals that
stop a run without leaving anything that looks finished.

* :func:`out_lock` -- ``OUT/.xnn.lock`` held with ``flock`` for the whole run (released by the kernel
  even after SIGKILL); the file holds the owner's pid, host and start time. A second run into the same
  folder is refused (:class:`RunLocked`, naming the owner and the fix); a lock left by a dead process
  is taken over. Where ``fcntl`` is missing, the pid in the file decides (a dead pid is taken over).
* :func:`interrupts` -- SIGTERM and SIGINT set a flag (:class:`Interrupts`) instead of killing the
  runner mid-write; :func:`run_interruptible` runs the notebook in a worker thread (so that nbclient
  cannot swallow the signal with its own loop handlers), kills the kernel (:class:`TrackedKernelManager`)
  when a signal arrives, and raises :class:`RunInterrupted` once the worker is done. The runner then
  leaves the partial files under their partial names and writes no marker: the notebook reads as
  incomplete and ``--resume`` runs it again.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from jupyter_client.manager import AsyncKernelManager

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["RunLocked", "RunInterrupted", "out_lock", "interrupts", "Interrupts", "run_interruptible",
           "TrackedKernelManager", "LOCK_NAME", "out_folder"]

LOCK_NAME = ".xnn.lock"
_KERNELS: List["TrackedKernelManager"] = []
_KERNELS_LOCK = threading.Lock()


class RunLocked(RuntimeError):
    """Another run is writing into the same output folder."""


class RunInterrupted(BaseException):
    """The run was stopped by SIGTERM or SIGINT (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"


def out_folder(out_dir, arg: str = "--out") -> Path:
    """``out_dir`` as a Path after refusing a path that exists and is not a folder."""
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{arg} {p} is a file, not a folder; pass a folder for the outputs "
                                 f"(e.g. {arg} runs/smoke)")
    return p


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _owner(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _refuse(path: Path, who: Dict[str, Any]) -> RunLocked:
    return RunLocked(f"another xnn run (pid {who.get('pid', '?')} on {who.get('host', '?')}, started "
                     f"{who.get('started', '?')}) is writing into {path.parent}; wait for it to finish, or pass "
                     "another --out folder")


@contextlib.contextmanager
def out_lock(out_dir) -> Iterator[Path]:
    """Hold ``OUT/.xnn.lock`` for the block (see the module docstring); raises :class:`RunLocked`."""
    out = out_folder(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if fcntl is None:  # pragma: no cover - the pid decides
        who = _owner(path)
        if who.get("pid") and who.get("host") == me["host"] and _pid_alive(int(who["pid"])):
            raise _refuse(path, who)
        path.write_text(json.dumps(me))
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise _refuse(path, _owner(path)) from None
        os.ftruncate(fd, 0)  # a stale owner (dead pid) is replaced
        os.write(fd, json.dumps(me).encode())
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class TrackedKernelManager(AsyncKernelManager):
    """nbclient's kernel manager, remembered while alive so that a signal can stop the kernel."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        with _KERNELS_LOCK:
            _KERNELS.append(self)


def _kill_kernels() -> None:
    with _KERNELS_LOCK:
        kms = list(_KERNELS)
    for km in kms:
        proc = getattr(getattr(km, "provisioner", None), "process", None)
        try:
            if proc is not None and proc.poll() is None:
                proc.kill()
        except OSError:  # already gone
            pass


class Interrupts:
    """The flag :func:`interrupts` sets: ``signum`` of the first SIGTERM/SIGINT received, else None."""

    def __init__(self):
        self.signum: Optional[int] = None

    def check(self) -> None:
        """Raise :class:`RunInterrupted` if a signal arrived."""
        if self.signum is not None:
            raise RunInterrupted(self.signum)


@contextlib.contextmanager
def interrupts() -> Iterator[Interrupts]:
    """SIGTERM and SIGINT set the flag (and stop a running kernel) for the block; the old handlers come
    back afterwards. Outside the main thread nothing is installed (the flag stays None)."""
    state = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_signal(signum, frame):
        if state.signum is None:
            state.signum = signum
        _kill_kernels()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_interruptible(fn: Callable[[], Any], state: Interrupts, grace: float = 60.0) -> Any:
    """``fn()`` in a worker thread; the main thread waits, and when ``state`` is signalled kills the
    kernels until the worker returns (at most ``grace`` seconds), then raises :class:`RunInterrupted`."""
    box: Dict[str, Any] = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the main thread
            box["error"] = e

    t = threading.Thread(target=work, name="xnn-notebook", daemon=True)
    t.start()
    waited = 0.0
    while t.is_alive():
        t.join(0.2)
        if state.signum is not None:
            _kill_kernels()
            waited += 0.2
            if waited > grace:
                break
    with _KERNELS_LOCK:
        _KERNELS.clear()
    state.check()
    if "error" in box:
        raise box["error"]
    return box.get("value")
