"""The figures of ``bench/soak.py``: a row every interval, then the targets checked."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from typing import Any

from soak_load import Tally, pct
from soak_watch import CLOSED, DROPPED, EXECUTIONS, RUNNING, SLOTS

MIB = 1024 * 1024
HEADER = (f"{'elapsed':>8} {'rate/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
          f"{'RSS MiB':>8} {'Redis MiB':>10} {'stored':>10} {'B/exec':>7} {'live':>7}")  # fmt: skip


@dataclass
class Row:
    """One interval of phase 2; memory and counts as read at its end."""

    elapsed: float
    seconds: float
    executions: int
    latencies: list[float]
    errors: int
    rss: int
    used: int
    stored: int
    acknowledged: int
    received: int
    workers: tuple[int, ...] = ()
    #: Filled in by ``Report.add``.
    per_execution: float | None = None
    live: float | None = None

    def line(self) -> str:
        per = f"{self.per_execution:7,.0f}" if self.per_execution is not None else f"{'-':>7}"
        live = f"{100 * self.live:6.1f}%" if self.live is not None else f"{'-':>7}"
        return (f"{self.elapsed:7.0f}s {self.executions / self.seconds:8,.0f} "
                f"{pct(self.latencies, 50):7.1f} {pct(self.latencies, 99):7.1f} "
                f"{self.errors:6d} {self.rss / MIB:8.1f} {self.used / MIB:10.1f} "
                f"{self.stored:10,d} {per} {live}")  # fmt: skip


@dataclass
class Report:
    args: argparse.Namespace
    load_before: str
    rate: float = 0.0
    used0: int = 0
    stored0: int = 0
    rows: list[Row] = field(default_factory=list)
    targets: dict[str, tuple[bool, str]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def begin(self, rate: float, used0: int, stored0: int) -> None:
        self.rate, self.used0, self.stored0 = rate, used0, stored0
        print(f"phase 2: {rate:,.0f} executions/s for {self.args.minutes:g} min, paced; Redis "
              f"{used0 / MIB:,.1f} MiB and {stored0:,} executions at the start; 'B/exec' is "
              f"Redis used_memory grown / executions stored since then, 'live' the slowest "
              f"dashboard's events / phase 2's acknowledged executions (an event can arrive "
              f"before its request's answer)", flush=True)  # fmt: skip
        print(HEADER, flush=True)

    def add(self, row: Row) -> None:
        if row.stored > self.stored0:
            row.per_execution = (row.used - self.used0) / (row.stored - self.stored0)
        if row.acknowledged:
            row.live = row.received / row.acknowledged
        self.rows.append(row)
        print(row.line(), flush=True)

    def rss_trend(self) -> tuple[float, float] | None:
        """Mean RSS of the first and of the last third of the rows after the warm-up."""
        settled = [r.rss for r in self.rows if r.elapsed > self.args.warmup]
        third = len(settled) // 3
        if third == 0:
            return None
        return statistics.fmean(settled[:third]), statistics.fmean(settled[-third:])

    def finish(self, *, maximum: float, tally: Tally, counts: list[int], cpu: dict[str, float],
               verified: tuple[int, int, int], where: dict[str, float], load: str,
               gunicorn_alive: bool) -> None:  # fmt: skip
        a, last = self.args, self.rows[-1]
        elapsed = sum(r.seconds for r in self.rows)
        achieved = len(tally.acknowledged) / elapsed
        lat = tally.latencies
        checked, missing, wrong = verified
        per = last.per_execution or float("nan")
        trend = self.rss_trend()
        slots = (EXECUTIONS, RUNNING, DROPPED, CLOSED)
        clients = [dict(zip(("executions", "running", "dropped", "closed"),
                            (counts[c * SLOTS + i] for i in slots)))
                   for c in range(a.clients)]  # fmt: skip
        received = ", ".join(f"{c['executions']:,}" for c in clients)
        expected = len(tally.acknowledged)
        print(
            f"summary ({elapsed:.0f} s of phase 2; load average {self.load_before} before, "
            f"{load} after):"
        )
        print(f"  rate:      {achieved:,.1f} executions/s achieved of {self.rate:,.1f} targeted "
              f"({a.fraction:g} x the {maximum:,.0f}/s maximum of phase 1); "
              f"{tally.requests:,} requests, {len(tally.errors)} failed"
              + (f", e.g. {tally.errors[:2]}" if tally.errors else ""))  # fmt: skip
        print(
            f"  latency:   p50 {pct(lat, 50):.1f}  p90 {pct(lat, 90):.1f}  p99 {pct(lat, 99):.1f}"
            f"  max {max(lat, default=float('nan')):.1f} ms from the scheduled send time"
        )
        if trend is not None:
            print(f"  RSS:       {trend[0] / MIB:.1f} MiB (first third after {a.warmup:g} s) -> "
                  f"{trend[1] / MIB:.1f} MiB (last third): x{trend[1] / trend[0]:.3f}; "
                  f"{min(r.rss for r in self.rows) / MIB:.1f}-"
                  f"{max(r.rss for r in self.rows) / MIB:.1f} MiB over the run")  # fmt: skip
        print(f"  Redis:     {(last.used - self.used0) / MIB:,.1f} MiB more for "
              f"{last.stored - self.stored0:,} more executions = {per:,.0f} B an execution "
              f"({last.used / MIB:,.1f} MiB, {last.stored:,} stored in all)")  # fmt: skip
        print(f"  stored:    {checked - missing - wrong:,} of {checked:,} acknowledged executions "
              f"read back with their status ({missing} missing, {wrong} with another status)"
              + ("; a server that keeps a number of runs per job trims the oldest: spread the "
                 "runs over more --jobs" if missing else ""))  # fmt: skip
        print(f"  live:      each of {a.clients} dashboards received "
              f"{received} of {expected:,} executions' "
              f"final events (dropped for them: {sum(c['dropped'] for c in clients)}, "
              f"disconnected: {sum(c['closed'] for c in clients)})")  # fmt: skip
        print(
            "  cpu:       "
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in cpu.items())
            + " of one core"
        )
        replaced = len({pid for r in self.rows for pid in r.workers}) - len(self.rows[0].workers)
        print(f"  workers:   {len(last.workers)} at the end, {replaced} replaced during the run"
              + (" (gunicorn max_requests: the RSS rows mix old and new workers)"
                 if replaced else ""))  # fmt: skip
        counted = {k: v for k, v in where.items() if not k.startswith("document")}
        where = {**where, "documents and the rest (B/exec minus the lines above it)":
                 per - sum(counted.values())}  # fmt: skip
        print("  where Redis memory goes, bytes an execution (sizes over all stored / stored):")
        for name, value in where.items():
            print(f"    {value:9,.0f}  {name}")

        kept_up = all(c["executions"] >= expected and not c["dropped"] and not c["closed"]
                      for c in clients)  # fmt: skip
        self.targets = {
            "every acknowledged execution stored": (missing == wrong == 0 and checked > 0,
                                                    f"{missing} missing, {wrong} wrong"),
            "no failed requests": (not tally.errors and gunicorn_alive,
                                   f"{len(tally.errors)} failed"),
            "rate within 5% of the target": (achieved >= 0.95 * self.rate,
                                             f"{achieved:,.0f} of {self.rate:,.0f}/s"),
            f"p99 < {a.p99_ms:g} ms": (pct(lat, 99) < a.p99_ms, f"{pct(lat, 99):.1f} ms"),
            f"RSS flat (last third <= {1 + a.rss_tolerance:g} x first third)": (
                trend is not None and trend[1] <= (1 + a.rss_tolerance) * trend[0],
                "too few rows after the warm-up" if trend is None
                else f"x{trend[1] / trend[0]:.3f}"),
            f"Redis < {a.bytes_target:,.0f} B an execution": (per < a.bytes_target,
                                                             f"{per:,.0f} B"),
            "dashboards kept up": (kept_up and a.clients > 0, f"{expected:,} expected each"),
        }  # fmt: skip
        print("targets:")
        for name, (met, detail) in self.targets.items():
            print(f"  {'met   ' if met else 'MISSED'}  {name}: {detail}")
        self.summary = {
            "maximum_rate": maximum, "target_rate": self.rate, "achieved_rate": achieved,
            "requests": tally.requests, "errors": len(tally.errors),
            "latency_ms": {p: pct(lat, p) for p in (50, 90, 99, 100)},
            "rss_first_third": trend and trend[0], "rss_last_third": trend and trend[1],
            "redis_bytes_per_execution": per, "acknowledged": checked, "missing": missing,
            "wrong_status": wrong, "expected_live_events": expected, "dashboards": clients,
            "cpu": cpu, "where": where, "workers_replaced": replaced,
            "load_before": self.load_before, "load_after": load,
        }  # fmt: skip

    def all_met(self) -> bool:
        return all(met for met, _ in self.targets.values())

    def figures(self) -> dict[str, Any]:
        rows = [{"elapsed": r.elapsed, "rate": r.executions / r.seconds,
                 "p50_ms": pct(r.latencies, 50), "p99_ms": pct(r.latencies, 99),
                 "errors": r.errors, "rss": r.rss, "used_memory": r.used, "stored": r.stored,
                 "bytes_per_execution": r.per_execution, "live": r.live}
                for r in self.rows]  # fmt: skip
        targets = {name: {"met": met, "detail": detail}
                   for name, (met, detail) in self.targets.items()}  # fmt: skip
        return {**self.summary, "rows": rows, "targets": targets}
