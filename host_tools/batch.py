"""Many boards at once: one worker thread and one progress line per port, a summary table.

    outcomes = run_all(ports, work, "deploy", console)   # work(port, progress) -> summary

A worker's Failure is that board's one-line reason; the others carry on. On a
terminal each board has a live progress line; otherwise (logs, CI) one line
per board when it finishes. Used for a single port too, so one board and a
hundred behave the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from host_tools.errors import Failure

ProgressFn = Callable[[float, str], None]
Work = Callable[[str, ProgressFn], str]
MAX_WORKERS = 32  # USB hubs and the host's USB stack, not the CPU, limit this


@dataclass
class Outcome:
    port: str
    ok: bool
    summary: str
    seconds: float


def run_all(ports: list[str], work: Work, title: str, console: Console) -> list[Outcome]:
    outcomes: dict[str, Outcome] = {}
    live = console.is_terminal
    lock = threading.Lock()
    with Progress(TextColumn("{task.fields[port]:<16}"), BarColumn(bar_width=24),
                  TaskProgressColumn(), TimeElapsedColumn(), TextColumn("{task.fields[what]}"),
                  console=console, disable=not live, transient=False) as bar:
        tasks = {p: bar.add_task(title, total=1.0, port=p, what="waiting") for p in ports}

        def one(port: str) -> None:
            started = time.monotonic()

            def progress(fraction: float, what: str) -> None:
                bar.update(tasks[port], completed=max(0.0, min(1.0, fraction)), what=what)

            try:
                summary = work(port, progress)
                outcome = Outcome(port, True, summary, time.monotonic() - started)
                bar.update(tasks[port], completed=1.0, what="[green]ok")
            except Failure as e:
                outcome = Outcome(port, False, str(e), time.monotonic() - started)
                bar.update(tasks[port], what="[red]failed")
            except Exception as e:  # a bug must not hide the other boards' results
                outcome = Outcome(port, False, f"internal error: {type(e).__name__}: {e}",
                                  time.monotonic() - started)
                bar.update(tasks[port], what="[red]failed")
            with lock:
                outcomes[port] = outcome
                if not live and len(ports) > 1:
                    mark = "ok  " if outcome.ok else "FAIL"
                    console.print(f"{mark} {port}: {outcome.summary}", highlight=False,
                                  soft_wrap=True)

        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(ports))) as pool:
            list(pool.map(one, ports))
    return [outcomes[p] for p in ports]


def summary_table(title: str, outcomes: list[Outcome]) -> Table:
    table = Table(title=f"kioskctl {title}: {sum(o.ok for o in outcomes)} of "
                        f"{len(outcomes)} boards ok")
    table.add_column("port")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column("details", overflow="fold")
    for o in outcomes:
        table.add_row(o.port, "[green]ok" if o.ok else "[red]FAILED", f"{o.seconds:.1f}", o.summary)
    return table
