"""The lease queue (``store/queue.py``) with real processes: workers claim, work and complete
tasks while some are SIGKILLed at random moments and replaced; every task ends done and
recorded exactly once. Expired leases go to the next claimant, a lease taken over commits
nothing, failing tasks are set aside, and network filesystems are refused."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthset.errors import SynthsetError
from synthset.store.queue import LeaseQueue, check_local_filesystem, filesystem_type

#: A worker: claim → "work" → complete by appending "<task>" to its own file, unless a complete
#: line for the task is already in some worker's file (what a manifest reader does).
WORKER = r"""
import os, random, sys, time
from pathlib import Path
from synthset.store.queue import LeaseQueue
db, out, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
queue = LeaseQueue(db, lease_s=1.0)
rng = random.Random(name)
mine = out / f"{name}.log"

def recorded():
    seen = set()
    for f in out.glob("*.log"):
        for line in f.read_text().splitlines(keepends=True):
            if line.endswith("\n"):
                seen.add(int(line))
    return seen

def commit(idx):
    def write():
        if idx in recorded():
            return
        with open(mine, "a") as fh:
            fh.write(f"{idx}\n")
            fh.flush()
            os.fsync(fh.fileno())
    return write

while True:
    idx = queue.claim(name)
    if idx is None:
        c = queue.counts()
        if c.todo == 0 and c.leased == 0:
            break
        time.sleep(0.05)
        continue
    time.sleep(rng.uniform(0.0, 0.03))
    queue.complete(idx, name, commit(idx))
"""


def _start(db: Path, out: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(db), str(out), name])


def test_workers_killed_at_random_finish_every_task_exactly_once(tmp_path: Path) -> None:
    db, out = tmp_path / "queue.sqlite", tmp_path / "logs"
    out.mkdir()
    n_tasks = 1500
    queue = LeaseQueue(db, lease_s=1.0)
    queue.sync([(i, f"d{i}") for i in range(n_tasks)])
    rng = random.Random(0)
    workers = {f"w{i}": _start(db, out, f"w{i}") for i in range(4)}
    kills, spawned = 0, 4
    deadline = time.time() + 120
    while kills < 12 and time.time() < deadline:
        time.sleep(rng.uniform(0.05, 0.25))
        alive = [n for n, p in workers.items() if p.poll() is None]
        if not alive:
            break
        victim = rng.choice(alive)
        os.kill(workers[victim].pid, signal.SIGKILL)
        workers[victim].wait()
        kills += 1
        name = f"w{spawned}"
        workers[name] = _start(db, out, name)
        spawned += 1
    for p in workers.values():
        assert p.wait(timeout=120) in (0, -signal.SIGKILL)
    assert kills >= 10, kills
    lines = [int(ln) for f in out.glob("*.log") for ln in f.read_text().split()]
    assert sorted(lines) == list(range(n_tasks))  # every task recorded, none twice
    assert queue.counts().done == n_tasks


def test_an_expired_lease_moves_on_and_the_old_holder_commits_nothing(tmp_path: Path) -> None:
    queue = LeaseQueue(tmp_path / "q.sqlite", lease_s=0.2)
    queue.sync([(0, "a"), (1, "b")])
    assert queue.claim("slow") == 0
    assert queue.claim("fast") == 1
    assert queue.claim("fast") is None  # task 0 is still leased
    time.sleep(0.3)
    assert queue.claim("fast") == 0  # the lease expired: taken over
    wrote: list[str] = []
    assert not queue.complete(0, "slow", lambda: wrote.append("slow"))
    assert not queue.renew(0, "slow")
    assert queue.complete(0, "fast", lambda: wrote.append("fast"))
    assert wrote == ["fast"]
    # a commit step that raises leaves the task leased (it is retried, nothing marked done)
    with pytest.raises(OSError):
        queue.complete(1, "fast", lambda: (_ for _ in ()).throw(OSError("disk full")))
    assert queue.counts().leased == 1 and queue.counts().done == 1


def test_failing_tasks_are_set_aside_and_retried_on_request(tmp_path: Path) -> None:
    queue = LeaseQueue(tmp_path / "q.sqlite", max_attempts=2)
    queue.sync([(0, "a"), (1, "b")])
    for _ in range(2):
        idx = queue.claim("w")
        assert idx == 0
        queue.fail(idx, "w", "ValueError: bad prompt")
    assert queue.counts().failed == 1
    assert queue.failures() == [(0, "ValueError: bad prompt")]
    assert queue.claim("w") == 1  # the rest goes on
    assert queue.retry_failed() == 1 and queue.counts().todo == 1


def test_released_task_goes_back_without_an_attempt(tmp_path: Path) -> None:
    queue = LeaseQueue(tmp_path / "q.sqlite", max_attempts=1)
    queue.sync([(0, "a")])
    for _ in range(3):  # a full disk, three times: never set aside as failed
        assert queue.claim("w") == 0
        queue.release(0, "w")
    assert queue.counts().todo == 1 and queue.counts().failed == 0
    queue.release(0, "other")  # not its holder: nothing changes
    assert queue.claim("w") == 0


def test_worker_shares_and_pace(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "q.sqlite"
    old = sqlite3.connect(path)  # a queue made before done_at existed
    old.executescript(
        "CREATE TABLE tasks (idx INTEGER PRIMARY KEY, digest TEXT NOT NULL, state TEXT NOT NULL "
        "DEFAULT 'todo', worker TEXT, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0, "
        "error TEXT); INSERT INTO tasks (idx, digest) VALUES (0, 'a'), (1, 'b'), (2, 'c');"
    )
    old.commit()
    old.close()
    queue = LeaseQueue(path)
    assert queue.done_per_second() == 0.0
    for worker in ("a", "a", "b"):
        idx = queue.claim(worker)
        assert idx is not None
        if worker == "a":
            queue.complete(idx, worker, lambda: None)
            time.sleep(0.2)
    shares = {w.worker: (w.leased, w.done) for w in queue.workers()}
    assert shares == {"a": (0, 2), "b": (1, 0)}
    assert 1.0 < queue.done_per_second() < 10.0  # two completions ~0.2 s apart


def test_sync_restarts_changed_tasks_and_keeps_finished_ones(tmp_path: Path) -> None:
    queue = LeaseQueue(tmp_path / "q.sqlite")
    queue.sync([(0, "a"), (1, "b"), (2, "c")], finished=[0])
    assert queue.counts().done == 1 and queue.counts().todo == 2
    queue.sync([(0, "a"), (1, "B")])  # task 1 changed, task 2 left the plan
    assert queue.counts().done == 1 and queue.counts().todo == 1


def test_network_filesystems_are_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert filesystem_type(tmp_path) is not None
    monkeypatch.setattr("synthset.store.queue.filesystem_type", lambda path: "nfs4")
    with pytest.raises(SynthsetError, match="on a nfs4 filesystem.*slurm or ray executor"):
        check_local_filesystem(tmp_path)


def test_queue_workers_and_a_plain_writer_of_one_shard_exclude_each_other(tmp_path: Path) -> None:
    from synthset.store.locks import queue_worker_lease, writer_lease

    refused = pytest.raises(SynthsetError, match="queue workers .* are writing shard 0/1")
    with queue_worker_lease(tmp_path) as first, queue_worker_lease(tmp_path) as second:
        assert (first, second) == (0, 1)  # queue workers share the shard
        with refused, writer_lease(tmp_path):
            pass
    refused = pytest.raises(SynthsetError, match="without the queue executor is writing it")
    with writer_lease(tmp_path), refused, queue_worker_lease(tmp_path):
        pass


def test_helpers_get_one_gpu_each_when_there_are_enough() -> None:
    from synthset.executors.queue import HELPER_ENV, helper_envs

    envs = helper_envs(3, {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}, gpus=0)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["5", "6"]
    assert all(e[HELPER_ENV] == "1" for e in envs)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in helper_envs(2, {}, gpus=2)] == ["1"]
    assert "CUDA_VISIBLE_DEVICES" not in helper_envs(4, {}, gpus=2)[0]  # too few: shared


def test_local_with_several_workers_runs_as_the_queue() -> None:
    from synthset.executors.local import LocalExecutor
    from synthset.executors.queue import QueueExecutor
    from synthset.executors.registry import build_executor
    from synthset.recipe import GenerateSpec

    assert isinstance(build_executor(GenerateSpec()), LocalExecutor)
    assert isinstance(build_executor(GenerateSpec(workers=4)), QueueExecutor)
    assert isinstance(build_executor(GenerateSpec(executor="queue")), QueueExecutor)
