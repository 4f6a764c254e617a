"""A lease-based work queue on SQLite, for workers on one node sharing a run's batches.

Tasks are numbered (the plan's fixed chunks) and carry a digest of what they hold. A worker
**claims** the lowest-numbered task that is waiting or whose lease has expired, holding it with
a lease it renews while it works; a killed worker's lease runs out and the task goes to the next
claimant, so nothing is edited by hand after a crash. **Completing** a task runs the caller's
commit step (appending the task's manifest rows) inside the same write transaction that first
checks the lease is still the worker's: a worker whose lease was taken over commits nothing, so a
task's rows are written once. A task that keeps failing is set aside as ``failed`` after
``max_attempts`` with its error; ``retry_failed`` puts those back.

SQLite in WAL mode needs a local filesystem: :func:`check_local_filesystem` refuses network
filesystems (NFS, Lustre, GPFS, ...) in one line.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from synthset.errors import SynthsetError

#: File system types on which SQLite's locking and WAL are unreliable (from /proc/mounts).
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "fuse.sshfs", "ceph"}
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    idx INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'todo',
    worker TEXT,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS tasks_waiting ON tasks (state, idx);
CREATE INDEX IF NOT EXISTS tasks_expiring ON tasks (state, lease_until);
"""


@dataclass(frozen=True)
class WorkerStats:
    """One worker's share: tasks it holds now, tasks it completed, when it last completed one."""

    worker: str
    leased: int
    done: int
    last_done: float | None


@dataclass(frozen=True)
class QueueCounts:
    """How many tasks are in each state."""

    todo: int
    leased: int
    done: int
    failed: int


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (longest mount point of /proc/mounts)."""
    mounts = Path("/proc/mounts")
    if not mounts.exists():
        return None
    target = str(Path(path).resolve())
    best, kind = "", None
    for line in mounts.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, parts[2]
    return kind


def check_local_filesystem(path: Path) -> None:
    """A one-line error when ``path`` is on a network filesystem."""
    kind = filesystem_type(path)
    if kind in NETWORK_FILESYSTEMS:
        raise SynthsetError(
            f"generate.executor queue: {path} is on a {kind} filesystem, where SQLite's locks "
            "are unreliable; put the run folder on a local disk, or use the slurm or ray executor"
        )


class LeaseQueue:
    """The queue in ``path`` (created on first use); one instance per worker process."""

    def __init__(self, path: Path, lease_s: float = 60.0, max_attempts: int = 3) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_local_filesystem(self.path.parent)
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(tasks)")}
        if "done_at" not in columns:  # a queue an older synthset made
            self.db.execute("ALTER TABLE tasks ADD COLUMN done_at REAL")

    def close(self) -> None:
        self.db.close()

    def _write(self) -> sqlite3.Cursor:
        """Start a write transaction (the database's one writer until commit or rollback)."""
        return self.db.execute("BEGIN IMMEDIATE")

    def sync(self, tasks: Iterable[tuple[int, str]], finished: Iterable[int] = ()) -> None:
        """Make the table hold exactly ``tasks`` (index, digest): a task whose digest changed
        starts over, a new one is added, one no longer listed is dropped; ``finished`` tasks
        (all their items already recorded) are marked done."""
        wanted = dict(tasks)
        done = set(finished)
        self._write()
        try:
            have = dict(self.db.execute("SELECT idx, digest FROM tasks").fetchall())
            gone = [(i,) for i in have if i not in wanted]
            self.db.executemany("DELETE FROM tasks WHERE idx = ?", gone)
            for idx, digest in wanted.items():
                state = "done" if idx in done else "todo"
                if have.get(idx) != digest:
                    self.db.execute(
                        "INSERT OR REPLACE INTO tasks (idx, digest, state, attempts) "
                        "VALUES (?, ?, ?, 0)",
                        (idx, digest, state),
                    )
                elif idx in done:
                    self.db.execute("UPDATE tasks SET state = 'done' WHERE idx = ?", (idx,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def claim(self, worker: str) -> int | None:
        """The task this worker now holds (None: nothing is waiting or expired)."""
        now = time.time()
        self._write()
        try:
            # two indexed lookups (an OR of both would scan the table on every claim)
            row = (
                self.db.execute(
                    "SELECT idx FROM tasks WHERE state = 'todo' ORDER BY idx LIMIT 1"
                ).fetchone()
                or self.db.execute(
                    "SELECT idx FROM tasks WHERE state = 'leased' AND lease_until < ? "
                    "ORDER BY lease_until LIMIT 1",
                    (now,),
                ).fetchone()
            )
            if row is not None:
                self.db.execute(
                    "UPDATE tasks SET state = 'leased', worker = ?, lease_until = ? WHERE idx = ?",
                    (worker, now + self.lease_s, row[0]),
                )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return None if row is None else int(row[0])

    def renew(self, idx: int, worker: str) -> bool:
        """Extend this worker's lease on ``idx``; False when it is no longer the worker's."""
        cur = self.db.execute(
            "UPDATE tasks SET lease_until = ? WHERE idx = ? AND state = 'leased' AND worker = ?",
            (time.time() + self.lease_s, idx, worker),
        )
        return cur.rowcount == 1

    def complete(self, idx: int, worker: str, commit: Callable[[], None]) -> bool:
        """Run ``commit`` (e.g. append the task's manifest rows) and mark the task done, in one
        write transaction, if the worker still holds it; False (and ``commit`` not run) when
        its lease was taken over."""
        self._write()
        try:
            held = self.db.execute(
                "SELECT 1 FROM tasks WHERE idx = ? AND state = 'leased' AND worker = ?",
                (idx, worker),
            ).fetchone()
            if held is None:
                self.db.execute("ROLLBACK")
                return False
            commit()
            self.db.execute(
                "UPDATE tasks SET state = 'done', lease_until = NULL, done_at = ? WHERE idx = ?",
                (time.time(), idx),
            )
            self.db.execute("COMMIT")
            return True
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def fail(self, idx: int, worker: str, error: str) -> str:
        """Give the task back after an error; after ``max_attempts`` it is set aside as
        failed. Returns its new state."""
        self._write()
        try:
            row = self.db.execute(
                "SELECT attempts FROM tasks WHERE idx = ? AND state = 'leased' AND worker = ?",
                (idx, worker),
            ).fetchone()
            state = "todo"
            if row is not None:
                state = "failed" if row[0] + 1 >= self.max_attempts else "todo"
                self.db.execute(
                    "UPDATE tasks SET state = ?, attempts = attempts + 1, error = ?, "
                    "worker = NULL, lease_until = NULL WHERE idx = ?",
                    (state, error[:500], idx),
                )
            self.db.execute("COMMIT")
            return state
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def release(self, idx: int, worker: str) -> None:
        """Give the task back at once, no attempt counted (the worker, not the task, failed:
        a full disk, a stop)."""
        self.db.execute(
            "UPDATE tasks SET state = 'todo', worker = NULL, lease_until = NULL "
            "WHERE idx = ? AND state = 'leased' AND worker = ?",
            (idx, worker),
        )

    def retry_failed(self) -> int:
        """Put every failed task back in line; how many there were."""
        cur = self.db.execute(
            "UPDATE tasks SET state = 'todo', attempts = 0, error = NULL WHERE state = 'failed'"
        )
        return cur.rowcount

    def counts(self) -> QueueCounts:
        """Tasks per state (an expired lease counts as leased until someone claims it)."""
        found = dict(self.db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state"))
        return QueueCounts(*(int(found.get(s, 0)) for s in ("todo", "leased", "done", "failed")))

    def workers(self) -> list[WorkerStats]:
        """Every worker that holds or completed a task, busiest first."""
        rows = self.db.execute(
            "SELECT worker, SUM(state = 'leased'), SUM(state = 'done'), MAX(done_at) "
            "FROM tasks WHERE worker IS NOT NULL GROUP BY worker ORDER BY 3 DESC, 1"
        )
        return [WorkerStats(str(w), int(held), int(done), last) for w, held, done, last in rows]

    def done_per_second(self, window_s: float = 300.0) -> float:
        """Tasks completed per second over the last ``window_s`` of completions (0: none)."""
        last = self.db.execute("SELECT MAX(done_at) FROM tasks").fetchone()[0]
        if last is None:
            return 0.0
        first, n = self.db.execute(
            "SELECT MIN(done_at), COUNT(*) FROM tasks WHERE done_at >= ?", (last - window_s,)
        ).fetchone()
        return (n - 1) / (last - first) if n > 1 and last > first else 0.0

    def failures(self) -> list[tuple[int, str]]:
        """(task, last error) of every failed task."""
        rows = self.db.execute("SELECT idx, error FROM tasks WHERE state = 'failed' ORDER BY idx")
        return [(int(i), str(e)) for i, e in rows]


def worker_name() -> str:
    """This process's name in the queue: host and pid."""
    return f"{os.uname().nodename}:{os.getpid()}"
