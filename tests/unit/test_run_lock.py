"""The per-run lock: exclusive, named owner, heartbeat, stale locks taken over, bad settings refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from aotp.results.lock import LOCK_NAME, RunLock, RunLocked, run_lock


def write_lock(run_dir, pid: int, host: str, age_seconds: float = 0.0) -> None:
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host, "started": "2026-12-02T00:00:00+00:00", "token": "theirs"}))
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_lock_is_exclusive_names_its_owner_and_is_released(tmp_path):
    with RunLock(tmp_path) as first:
        owner = json.loads((tmp_path / LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["started"]
        with pytest.raises(RunLocked) as refused:
            RunLock(tmp_path).acquire()
        message = str(refused.value)
        assert "\n" not in message and f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert tmp_path.name in message and "lock.wait_seconds" in message
        assert first.token == owner["token"]
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):  # free again
        pass


def test_a_waiting_launch_gets_the_lock_when_the_owner_releases_it(tmp_path):
    owner = RunLock(tmp_path).acquire()
    threading.Timer(0.5, owner.release).start()
    started = time.monotonic()
    with RunLock(tmp_path, wait_seconds=30, poll_seconds=0.05):
        assert 0.4 < time.monotonic() - started < 10
    with RunLock(tmp_path):
        pass


def test_a_waiting_launch_gives_up_after_wait_seconds(tmp_path):
    with RunLock(tmp_path):
        started = time.monotonic()
        with pytest.raises(RunLocked, match="waited 0.3 s"):
            RunLock(tmp_path, wait_seconds=0.3, poll_seconds=0.05).acquire()
        assert time.monotonic() - started >= 0.3


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_with_a_warning(tmp_path, caplog):
    pid = dead_pid()
    write_lock(tmp_path, pid, socket.gethostname())
    with RunLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.token
    assert f"took over the stale lock {tmp_path / LOCK_NAME}: its owner, pid {pid} on this host" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_of_another_host_is_stale_only_without_a_heartbeat_for_stale_seconds(tmp_path, caplog):
    write_lock(tmp_path, 1, "some-other-node", age_seconds=30)
    with pytest.raises(RunLocked, match="pid 1 on some-other-node"):
        RunLock(tmp_path, stale_seconds=60, heartbeat_seconds=10).acquire()
    write_lock(tmp_path, 1, "some-other-node", age_seconds=90)
    with RunLock(tmp_path, stale_seconds=60, heartbeat_seconds=10):
        pass
    assert "pid 1 on some-other-node, has not refreshed it for 90 s (> lock.stale_seconds=60)" in caplog.text


def test_a_live_process_on_this_host_keeps_its_lock(tmp_path):
    write_lock(tmp_path, os.getppid(), socket.gethostname())
    with pytest.raises(RunLocked, match=f"pid {os.getppid()}"):
        RunLock(tmp_path).acquire()


def test_the_owner_refreshes_its_lock_so_it_never_turns_stale(tmp_path):
    with RunLock(tmp_path, stale_seconds=0.6, heartbeat_seconds=0.1):
        path = tmp_path / LOCK_NAME
        os.utime(path, (time.time() - 100, time.time() - 100))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 0.4
        with pytest.raises(RunLocked):
            RunLock(tmp_path, stale_seconds=0.6, heartbeat_seconds=0.1).acquire()


def test_concurrent_takeovers_of_one_stale_lock_give_it_to_exactly_one(tmp_path):
    write_lock(tmp_path, dead_pid(), socket.gethostname())
    winners, barrier = [], threading.Barrier(8)

    def contend():
        lock = RunLock(tmp_path, poll_seconds=0.01)
        barrier.wait()
        try:
            lock.acquire()
        except RunLocked:
            return
        winners.append(lock)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == winners[0].token
    winners[0].release()


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
    lock = RunLock(tmp_path).acquire()
    write_lock(tmp_path, 1, "some-other-node")  # taken over while this process stalled
    lock.release()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == "theirs"


@pytest.mark.parametrize("settings,message", [
    ({"wait_seconds": -1}, "lock.wait_seconds must be a number of seconds >= 0, got -1"),
    ({"stale_seconds": 30, "heartbeat_seconds": 60}, "lock.heartbeat_seconds (60) must be > 0 and below lock.stale"),
    ({"wait": 5}, "lock.wait is not an option; valid: wait_seconds, stale_seconds, heartbeat_seconds"),
])
def test_bad_settings_are_refused_with_the_option_named(tmp_path, settings, message):
    with pytest.raises(ValueError) as refused:
        run_lock(tmp_path, settings)
    assert message in str(refused.value)
