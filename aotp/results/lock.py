"""One process per run: a lock file in the run folder that also works on the shared filesystems of clusters.

    <run_dir>/run.lock = {"pid": 81234, "host": "node17", "started": "2026-12-02T02:10:00+00:00", "token": "..."}

* Taken by creating the file with ``O_CREAT | O_EXCL``, which is atomic on local filesystems and on NFS
  (v3 and later), where SLURM jobs of one sweep share a results folder; ``flock`` locks are not
  reliably seen across NFS clients. Taken after a run's record was checked and before anything is
  trained or written; released (deleted) when the run ends, also when it fails.
* A second launch of a running run waits for the lock up to ``wait_seconds`` (then, if the first
  launch succeeded, it skips the run as finished) or, at ``wait_seconds=0`` or when the wait runs out,
  raises :class:`RunLocked`, whose one-line message names the owner's pid, host and start time.
* Stale locks: the owner refreshes the file's mtime every ``heartbeat_seconds`` from a daemon thread.
  A lock is stale when its owner is on this host and its pid is gone (a kill, a crash), or, on any
  host, when it was not refreshed for ``stale_seconds`` (a dead node, where the pid cannot be checked;
  keep ``stale_seconds`` well above ``heartbeat_seconds`` plus the clock difference between hosts).
  A stale lock is taken over with a warning. Takeovers are serialised by a second ``O_EXCL`` file,
  ``run.lock.takeover``, so that two launches that both find the lock stale cannot both take it.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("aotp.lock")

LOCK_NAME = "run.lock"


class RunLocked(RuntimeError):
    """Another live process holds the run's lock; the message names it."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class RunLock:
    """The lock of one run folder. ``acquire()`` / ``release()``, or use it as a context manager."""

    def __init__(self, run_dir: os.PathLike | str, wait_seconds: float = 0.0, stale_seconds: float = 600.0,
                 heartbeat_seconds: float = 60.0, poll_seconds: float = 2.0):
        for name, value in (("wait_seconds", wait_seconds), ("stale_seconds", stale_seconds),
                            ("heartbeat_seconds", heartbeat_seconds)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"lock.{name} must be a number of seconds >= 0, got {value!r}")
        if not 0 < heartbeat_seconds < stale_seconds:
            raise ValueError(f"lock.heartbeat_seconds ({heartbeat_seconds}) must be > 0 and below lock.stale_seconds "
                             f"({stale_seconds}): a live owner must refresh its lock before it counts as stale")
        self.path = Path(run_dir) / LOCK_NAME
        self.guard = self.path.with_name(LOCK_NAME + ".takeover")
        self.wait_seconds, self.stale_seconds = float(wait_seconds), float(stale_seconds)
        self.heartbeat_seconds, self.poll_seconds = float(heartbeat_seconds), float(poll_seconds)
        self.host = socket.gethostname()
        self.token: Optional[str] = None
        self._stop = threading.Event()
        self._heartbeat: Optional[threading.Thread] = None

    # -- taking and giving back ------------------------------------------------------------------------

    def acquire(self) -> "RunLock":
        deadline = time.monotonic() + self.wait_seconds
        announced = False
        while True:
            if self._create():
                self._start_heartbeat()
                return self
            owner, age = self.owner()
            if owner is None and age is None:
                continue  # released between our attempt and the read: try again at once
            reason = self.stale_reason(owner, age)
            if reason is not None:
                if self._take_over(owner, reason):
                    self._start_heartbeat()
                    return self
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunLocked(self.describe(owner, waited=self.wait_seconds))
            if not announced:
                print(f"Waiting up to {self.wait_seconds:g} s for {self.describe(owner)}", flush=True)
                announced = True
            time.sleep(min(self.poll_seconds, remaining))

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        if self.token is not None and self._holds():
            self.path.unlink(missing_ok=True)
        self.token = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    # -- the lock file ---------------------------------------------------------------------------------

    def _create(self) -> bool:
        token = uuid.uuid4().hex
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        owner = {"pid": os.getpid(), "host": self.host,
                 "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "token": token}
        with os.fdopen(descriptor, "w") as handle:
            json.dump(owner, handle)
            handle.flush()
            os.fsync(handle.fileno())
        self.token = token
        return True

    def owner(self) -> tuple[Optional[dict[str, Any]], Optional[float]]:
        """(owner fields, seconds since the last heartbeat); (None, None) when there is no lock file.

        A file being created has no content yet: its owner reads as ``{}`` (stale only by age).
        """
        try:
            age = time.time() - self.path.stat().st_mtime
            text = self.path.read_text()
        except FileNotFoundError:
            return None, None
        try:
            owner = json.loads(text)
        except ValueError:
            owner = {}
        return (owner if isinstance(owner, dict) else {}), age

    def stale_reason(self, owner: dict[str, Any], age: float) -> Optional[str]:
        pid, host = owner.get("pid"), owner.get("host")
        if host == self.host and isinstance(pid, int) and not pid_alive(pid):
            return f"its owner, pid {pid} on this host ({host}), is gone"
        if age > self.stale_seconds:
            return (f"its owner, pid {pid} on {host}, has not refreshed it for {age:.0f} s "
                    f"(> lock.stale_seconds={self.stale_seconds:g})")
        return None

    def describe(self, owner: dict[str, Any], waited: Optional[float] = None) -> str:
        who = (f"pid {owner.get('pid')} on {owner.get('host')} (since {owner.get('started')})" if owner
               else "another process (lock being written)")
        text = f"run {self.path.parent.name} is being trained by {who}; lock: {self.path}"
        if waited is not None:
            text += (f"; not training it twice (waited {waited:g} s; set lock.wait_seconds=N to wait for it, "
                     f"or delete the lock file if that process is gone)")
        return text

    def _holds(self) -> bool:
        owner, _ = self.owner()
        return owner is not None and owner.get("token") == self.token

    def _take_over(self, stale_owner: dict[str, Any], reason: str) -> bool:
        """Replace a stale lock by ours; False if another launch got there first (the caller looks again)."""
        try:
            descriptor = os.open(self.guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:  # a takeover takes milliseconds; a guard this old was left by a launch killed mid-takeover
                if time.time() - self.guard.stat().st_mtime > self.stale_seconds:
                    self.guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(min(self.poll_seconds, 0.2))
            return False
        os.close(descriptor)
        try:
            current, _ = self.owner()
            if current is not None and current.get("token") != stale_owner.get("token"):
                return False  # replaced meanwhile: not the stale lock any more
            self.path.unlink(missing_ok=True)
            if not self._create():
                return False
        finally:
            self.guard.unlink(missing_ok=True)
        log.warning("took over the stale lock %s: %s", self.path, reason)
        return True

    # -- heartbeat -------------------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="aotp-run-lock-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        warned = False
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                if self._holds():
                    os.utime(self.path)
                elif not warned:  # taken over as stale: this process was too slow to refresh it
                    log.warning("lost the lock %s to another launch (not refreshed within lock.stale_seconds)",
                                self.path)
                    warned = True
            except OSError as error:  # a filesystem hiccup must not kill the run; the next beat retries
                log.warning("could not refresh the lock %s: %s", self.path, error)


def run_lock(run_dir: os.PathLike | str, settings: Optional[dict[str, Any]] = None) -> RunLock:
    """A :class:`RunLock` from the ``lock`` config group (``wait_seconds``, ``stale_seconds``, ``heartbeat_seconds``)."""
    settings = dict(settings or {})
    unknown = set(settings) - {"wait_seconds", "stale_seconds", "heartbeat_seconds"}
    if unknown:
        raise ValueError(f"lock.{sorted(unknown)[0]} is not an option; valid: wait_seconds, stale_seconds, "
                         f"heartbeat_seconds")
    return RunLock(run_dir, **settings)
