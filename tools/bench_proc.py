"""CPU time and memory of a process tree, read from /proc (Linux only).

The runner may fork workers, so a figure for "the runner" is the sum (CPU) or the per-process
maximum (RSS) over the parent and every descendant alive at the time of the reading.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcStat:
    """One process at one instant."""

    pid: int
    cpu_s: float
    rss_kb: int
    hwm_kb: int


@dataclass(frozen=True, slots=True)
class TreeSnapshot:
    """A process and its descendants at one instant."""

    procs: tuple[ProcStat, ...] = field(default_factory=tuple)

    @property
    def cpu_s(self) -> float:
        return sum(p.cpu_s for p in self.procs)

    @property
    def rss_kb(self) -> int:
        return sum(p.rss_kb for p in self.procs)

    @property
    def max_rss_kb(self) -> int:
        return max((p.rss_kb for p in self.procs), default=0)

    @property
    def max_hwm_kb(self) -> int:
        return max((p.hwm_kb for p in self.procs), default=0)


def _read_stat(pid: int) -> tuple[int, float]:
    """(parent pid, user+system CPU seconds) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    # The command name is in parentheses and may itself hold spaces or parentheses.
    rest = raw[raw.rindex(b")") + 2:].split()
    ppid = int(rest[1])
    utime, stime = int(rest[11]), int(rest[12])
    return ppid, (utime + stime) / _TICKS


def _read_mem(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB from /proc/<pid>/status."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith(b"VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid, _ = _read_stat(int(name))
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        children.setdefault(ppid, []).append(int(name))
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def snapshot(root: int) -> TreeSnapshot:
    """CPU and memory of ``root`` and its descendants (processes that vanish are skipped)."""
    procs: list[ProcStat] = []
    for pid in _descendants(root):
        try:
            _, cpu = _read_stat(pid)
            rss, hwm = _read_mem(pid)
        except (OSError, ValueError, IndexError):
            continue
        procs.append(ProcStat(pid, cpu, rss, hwm))
    return TreeSnapshot(tuple(procs))


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine have used since boot (every core, not idle).

    Read before and after a run, it shows how much CPU something other than the runner and
    the client took: on a shared machine, the figure that says a measurement is noise.
    """
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    # cpu user nice system idle iowait irq softirq steal ...
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS
