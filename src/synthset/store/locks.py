"""Who may write one run folder at once, with OS file locks in ``<run>/locks/``: the kernel drops a
lock when its process dies (even by SIGKILL), so a killed writer never blocks the next one and
nothing is left to clean up (the lock files themselves hold no state).

- :func:`run_lock`: one ``synthset run`` per folder (``run.lock``).
- :func:`writer_lease`: generate writers of one shard *layout* at a time. A writer of shard i of
  n holds ``generate.shard<i>of<n>.lock`` while it runs. On arrival, inside the short-held
  ``gate.lock``, it takes its own lock (held: the same shard is already running, refused) and
  probes the locks of every other layout (one held: a writer of that layout is running, refused
  in one line naming it). Shards of the same layout run at once.
- :func:`no_writers`: holds the gate (no writer starts meanwhile) and says whether any writer
  is running, for work that must not race one (moving stale images aside).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from synthset.errors import SynthsetError
from synthset.store.run_folder import RunFolder

#: How long a writer waits for the gate (held only while a writer checks in or a sweep runs).
GATE_SECONDS = 600.0
_WRITER = re.compile(r"generate\.shard(\d+)of(\d+)(?:\.q\d+)?\.lock")
#: Queue workers one shard may have at once (each holds ``generate.shard<i>of<n>.q<k>.lock``).
MAX_QUEUE_WORKERS = 1024


def _folder(root: Path) -> Path:
    folder = RunFolder(Path(root)).locks
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SynthsetError(
            f"output_dir {root}: is a file or lies under one; give a folder path (--out)"
        ) from None
    except PermissionError:
        raise SynthsetError(
            f"output_dir {root}: no permission to create it; give a writable folder (--out)"
        ) from None
    return folder


@contextlib.contextmanager
def _gate(folder: Path) -> Iterator[None]:
    path = folder / "gate.lock"
    gate = FileLock(path, timeout=GATE_SECONDS)
    try:
        gate.acquire()
    except Timeout:
        raise SynthsetError(
            f"{path} has been held for {GATE_SECONDS:.0f} s by another process; "
            "wait for it, or use another --out"
        ) from None
    try:
        yield
    finally:
        gate.release()


def _running(folder: Path, other_than: int | None) -> tuple[int, int] | None:
    """A shard ``(i, n)`` whose writer holds its lock now, among layouts ``n != other_than``
    (every layout when None). Call inside the gate, so no writer arrives meanwhile."""
    for path in sorted(folder.glob("generate.shard*of*.lock")):
        match = _WRITER.fullmatch(path.name)
        if match is None or int(match[2]) == other_than:
            continue
        probe = FileLock(path, timeout=0)
        try:
            probe.acquire()
        except Timeout:
            return int(match[1]), int(match[2])
        probe.release()
    return None


def _held(paths: Iterator[Path]) -> bool:
    """Whether any of these lock files is held by a live process now."""
    for path in paths:
        probe = FileLock(path, timeout=0)
        try:
            probe.acquire()
        except Timeout:
            return True
        probe.release()
    return False


def _describe(shard: tuple[int, int]) -> str:
    index, count = shard
    if count == 1:
        return "an unsharded 'synthset generate'"
    return f"'synthset generate --shard {index}/{count}' (a layout of {count} shards)"


def _layout_error(root: Path, running: tuple[int, int], shard: tuple[int, int]) -> SynthsetError:
    count = running[1]
    this = "unsharded" if shard[1] == 1 else f"--shard {shard[0]}/{shard[1]}"
    join = f", run this one as another shard i/{count} of its layout" if count > 1 else ""
    return SynthsetError(
        f"{root}: {_describe(running)} is writing this run folder and this generate is {this}; "
        f"writers of different shard layouts cannot share a folder: wait for it to finish{join}, "
        "or use another --out"
    )


@contextlib.contextmanager
def writer_lease(root: Path, shard: tuple[int, int] = (0, 1)) -> Iterator[None]:
    """Hold the run folder for a generate writer of ``shard`` (i, n) until the block ends.
    Refused in one line while a writer of another layout, or of the same shard, holds it."""
    index, count = shard
    folder = _folder(root)
    mine = FileLock(folder / f"generate.shard{index}of{count}.lock", timeout=0)
    with _gate(folder):
        try:
            mine.acquire()
        except Timeout:
            what = f"shard {index}/{count} of {root}" if count > 1 else str(root)
            how = "another --shard or --out" if count > 1 else "another --out"
            raise SynthsetError(
                f"another 'synthset generate' is writing {what} right now; wait for it to "
                f"finish, or run this one with {how}"
            ) from None
        try:
            running = _running(folder, other_than=count)
            queued = _held(folder.glob(f"generate.shard{index}of{count}.q*.lock"))
        except BaseException:
            mine.release()
            raise
        if running is not None:
            mine.release()
            raise _layout_error(Path(root), running, shard)
        if queued:
            mine.release()
            raise SynthsetError(
                f"{root}: queue workers (generate.executor: queue) are writing shard "
                f"{index}/{count}; wait for them, or run this one with the queue executor too"
            )
    try:
        yield
    finally:
        mine.release()


@contextlib.contextmanager
def queue_worker_lease(root: Path, shard: tuple[int, int] = (0, 1)) -> Iterator[int]:
    """Hold the run folder for one queue worker of ``shard``; yields its worker number (the
    lowest free one). Any number of queue workers of one shard run at once; a plain writer of
    the same shard, or a writer of another layout, is refused in one line (and refuses them)."""
    index, count = shard
    folder = _folder(root)
    with _gate(folder):
        plain = FileLock(folder / f"generate.shard{index}of{count}.lock", timeout=0)
        try:
            plain.acquire()
        except Timeout:
            raise SynthsetError(
                f"{root}: a 'synthset generate' of shard {index}/{count} without the queue "
                "executor is writing it; wait for it to finish, or run this one with the same "
                "executor"
            ) from None
        plain.release()
        running = _running(folder, other_than=count)
        if running is not None:
            raise _layout_error(Path(root), running, shard)
        for worker in range(MAX_QUEUE_WORKERS):
            mine = FileLock(folder / f"generate.shard{index}of{count}.q{worker}.lock", timeout=0)
            try:
                mine.acquire()
                break
            except Timeout:
                continue
        else:
            raise SynthsetError(f"{root}: {MAX_QUEUE_WORKERS} queue workers are running already")
    try:
        yield worker
    finally:
        mine.release()


@contextlib.contextmanager
def no_writers(root: Path) -> Iterator[bool]:
    """Keep generate writers out of the run folder for the block (they wait at the gate) and
    say whether none was running when it began."""
    folder = _folder(root)
    with _gate(folder):
        yield _running(folder, other_than=None) is None


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold the run folder for one ``synthset run``; a second one is refused in one line."""
    lock = FileLock(_folder(root) / "run.lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SynthsetError(
            f"another 'synthset run' is running on {root} right now; wait for it to finish, "
            "or use another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()
