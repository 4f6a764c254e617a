"""How the SQLite lease queue holds up under many workers on one node: 16 to 256 lightweight
processes (no model: each task is a claim and a complete with a one-line commit step) hammer
one queue; reports claims per second across all workers and the claim and complete latency
percentiles. The figures back the queue rows of docs/scale.md.

    python benchmarks/queue_hammer.py [--workers 16 64 256] [--tasks 20000]
        [--json benchmarks/results/queue_hammer.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

WORKER = r"""
import json, sys, time
from pathlib import Path
from synthset.store.queue import LeaseQueue
db, out, name, start_at = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
queue = LeaseQueue(db, lease_s=60.0)
while time.time() < start_at:
    time.sleep(0.001)
claims, completes = [], []
with open(out / f"{name}.log", "a") as fh:
    while True:
        t0 = time.perf_counter()
        idx = queue.claim(name)
        t1 = time.perf_counter()
        if idx is None:
            break
        queue.complete(idx, name, lambda: fh.write(f"{idx}\n"))
        t2 = time.perf_counter()
        claims.append(t1 - t0)
        completes.append(t2 - t1)
(out / f"{name}.json").write_text(json.dumps({"claims": claims, "completes": completes}))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def hammer(workers: int, tasks: int) -> dict[str, float]:
    from synthset.store.queue import LeaseQueue

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db = root / "queue.sqlite"
        LeaseQueue(db).sync([(i, str(i)) for i in range(tasks)])
        start_at = time.time() + 5 + workers * 0.05  # every worker imported before the start
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(db), str(root), f"w{i}", str(start_at)]
            )
            for i in range(workers)
        ]
        for p in procs:
            assert p.wait() == 0
        end = max((root / f"w{i}.json").stat().st_mtime for i in range(workers))
        claims, completes = [], []
        for i in range(workers):
            data = json.loads((root / f"w{i}.json").read_text())
            claims += data["claims"]
            completes += data["completes"]
        done = sorted(int(x) for f in root.glob("*.log") for x in f.read_text().split())
        assert done == list(range(tasks)), "a task was lost or done twice"
        seconds = end - start_at
    return {
        "workers": workers,
        "tasks": tasks,
        "seconds": round(seconds, 2),
        "tasks_per_s": round(tasks / seconds, 1),
        "claim_ms_p50": round(1000 * statistics.median(claims), 3),
        "claim_ms_p99": round(1000 * percentile(claims, 0.99), 2),
        "complete_ms_p50": round(1000 * statistics.median(completes), 3),
        "complete_ms_p99": round(1000 * percentile(completes, 0.99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--json", type=Path, default=RESULTS / "queue_hammer.json")
    args = parser.parse_args()
    rows = []
    for n in args.workers:
        rows.append(hammer(n, args.tasks))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "benchmark": "queue_hammer",
        "command": "python benchmarks/queue_hammer.py --workers "
        + " ".join(map(str, args.workers))
        + f" --tasks {args.tasks}",
        "note": "2-core VM: with many workers, latency is mostly waiting for a core, not the lock",
        "rows": rows,
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
