"""A CPU run's fair share of the cores: torch threads follow what the other processes leave free.

OpenMP threads that wait for work spin, which is what makes a run fast on an idle machine (letting
them sleep instead costs about a quarter of the speed there, as the LSTM's time loop opens
thousands of short parallel regions). Beside busy processes the same spinning takes their cores:
two spinning processes beside a run on 2 cores made it 3.5x slower than idle
(``benchmarks/under_load.py``). So threads keep spinning, and their number follows the cores the
rest of the machine leaves free, measured from ``/proc`` a few times a second: all of them when the
machine is idle, one when it is busy. The vectors do not depend on the thread count (the stores
of any worker count are bitwise equal), so changing it mid-run changes nothing but speed.

Linux only (elsewhere, and where ``/proc`` cannot be read, the thread count is left as it is).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

INTERVAL_S = 0.1  # how often the share is measured: often enough to follow a neighbour, at no cost
CARRY_S = 2.0  # how long a measurement stands for the next task of the same process


@dataclass(frozen=True)
class Sample:
    """CPU time so far, in clock ticks: the machine's busy time, and this process tree's."""

    at: float
    busy: int
    ours: int


def machine_busy_ticks(stat: str) -> int:
    """Busy ticks of all cores from ``/proc/stat``'s first line (idle and iowait are not busy;
    steal is, as a hypervisor's neighbours hold the core then)."""
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in stat.split()[1:9])
    return user + nice + system + irq + softirq + steal


def process_ticks(stat: str) -> int:
    """utime + stime of one ``/proc/PID/stat`` line (the command name may hold spaces and ')')."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _tree_ticks(pid: int) -> int:
    """CPU ticks of ``pid`` and its living descendants (the planning processes, a converter)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            total += process_ticks(Path(f"/proc/{p}/stat").read_text())
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):  # exited meanwhile
            continue
    return total


def sample() -> Sample | None:
    try:
        with open("/proc/stat") as f:
            busy = machine_busy_ticks(f.readline())
        return Sample(time.monotonic(), busy, _tree_ticks(os.getpid()))
    except (OSError, ValueError):
        return None


def fair_threads(before: Sample, after: Sample, cores: int, most: int, ticks_per_s: float) -> int:
    """Threads for the next interval: the cores that processes other than ours kept busy since
    ``before`` are theirs; the rest are ours, at least 1 and at most ``most``."""
    seconds = after.at - before.at
    others = max(0, (after.busy - before.busy) - (after.ours - before.ours)) / ticks_per_s / seconds
    return max(1, min(most, round(cores - others)))


class CoreShare:
    """Follows the free cores while a CPU run computes; gives back the thread count it found.

    ``update()`` is called once per batch (it measures at most every ``INTERVAL_S``); the
    thread count at creation (the user's ``torch.set_num_threads`` or ``OMP_NUM_THREADS``) is the
    most it uses. A run's tasks are often shorter than the interval, so what the last one measured
    carries over to the next (within ``CARRY_S``) instead of each starting with every core.
    """

    _carried: tuple[Sample, int] | None = None  # the process's last measurement and its decision

    def __init__(self) -> None:
        self.most = torch.get_num_threads()
        self.cores = os.cpu_count() or 1
        self.ticks_per_s = os.sysconf("SC_CLK_TCK")
        self.last = None
        if self.most > 1:
            carried = CoreShare._carried
            if carried is not None and time.monotonic() - carried[0].at < CARRY_S:
                self.last = carried[0]
                torch.set_num_threads(min(self.most, carried[1]))
            else:
                self.last = sample()

    def update(self) -> None:
        if self.last is None or time.monotonic() - self.last.at < INTERVAL_S:
            return
        now = sample()
        if now is None:
            self.last = None
            return
        threads = fair_threads(self.last, now, self.cores, self.most, self.ticks_per_s)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self.last = now
        CoreShare._carried = (now, threads)

    def close(self) -> None:
        if torch.get_num_threads() != self.most:
            torch.set_num_threads(self.most)
