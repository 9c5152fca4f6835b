"""Redis memory per execution record, in about 20 seconds instead of the soak's 11 minutes.

    .venv/bin/python bench/memory.py [--executions 60000] [--jobs 50] [--output-bytes 1024]

Starts its own Redis Stack (from the pinned wheels, no persistence) and writes the soak's
executions (``bench/soak_load.py``: 1 KB of log-line stdout, ~2 % failed with a traceback,
labels, versions, host and the handler's source) through ``RedisStackBackend.write_executions``
500 at a time, final events only, their runs spread over the last ``--executions`` × 50 ms.
It prints Redis ``used_memory`` grown per execution and where it went (the soak's breakdown).

The figure is higher than the soak's for the same code, since fewer executions share the
index's vocabulary (the soak's falls from ~4.0 to ~3.7 KB over 650,000), so compare it with
itself: run it on two commits to see what a change does to the layout's cost.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak_load import Workload  # noqa: E402
from soak_watch import RedisProbe  # noqa: E402

from chronos.backends.base import BackendOptions  # noqa: E402
from chronos.backends.redis_stack import RedisStackBackend  # noqa: E402
from chronos.embedded import RedisStackServer  # noqa: E402
from chronos.ingest import build_execution  # noqa: E402
from chronos.models import ExecutionQuery, Job  # noqa: E402
from chronos.schemas import ExecutionEventSchema  # noqa: E402

PREFIX = "mem:"
TENANT = "acme"
BATCH = 500
MAX_OUTPUT = 64 * 1024


def write(backend: RedisStackBackend, workload: Workload, total: int) -> None:
    """``total`` final events, loaded by the API's schema as an ingest request would be."""
    rng, schema = random.Random(1), ExecutionEventSchema()
    now = int(time.time() * 1000)
    batch = []
    for i in range(total):
        started = now - (total - i) * 50
        run = workload.running(rng, "m", started) | {"_started": started}
        data = schema.load(workload.terminal(rng, run, started + 1000))
        batch.append(build_execution(TENANT, data, now, MAX_OUTPUT))
        if len(batch) == BATCH or i == total - 1:
            backend.write_executions(TENANT, batch)
            batch = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=60_000)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--output-bytes", type=int, default=1024)
    parser.add_argument("--error-rate", type=float, default=0.02)
    args = parser.parse_args()

    server = RedisStackServer(root=Path(tempfile.mkdtemp(prefix="chronos-mem-")), persistent=False)
    url = server.start()
    try:
        backend = RedisStackBackend(url, BackendOptions(key_prefix=PREFIX))
        backend.migrate()
        workload = Workload(args.jobs, args.output_bytes, args.error_rate)
        backend.upsert_jobs(TENANT, [Job(TENANT, workload.job_id(n)) for n in range(args.jobs)],
                            int(time.time() * 1000))  # fmt: skip
        r = backend.client()
        probe = RedisProbe(r, backend.keys.index_alias("executions"), PREFIX)
        used0 = probe.used_memory()
        started = time.perf_counter()
        write(backend, workload, args.executions)
        elapsed = time.perf_counter() - started
        stored = probe.stored()
        grown = probe.used_memory() - used0
        print(f"{stored:,} executions ({args.jobs} jobs, {args.output_bytes} B of stdout) "
              f"written in {elapsed:.1f} s")  # fmt: skip
        print(f"Redis used_memory grew {grown / 2**20:,.1f} MiB: {grown / stored:,.0f} B an "
              f"execution")  # fmt: skip
        sample = [backend.keys.execution(TENANT, e.exec_id) for e in
                  backend.search_executions(TENANT, ExecutionQuery(limit=100)).items]  # fmt: skip
        total = 0.0
        for name, size in probe.where(sample).items():
            if not name.startswith("document"):
                total += size
            print(f"  {size:>7,.0f}  {name}")
        print(f"  {grown / stored - total:>7,.0f}  documents and the rest (B/exec minus the lines "
              f"above it but the first)")  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    main()
