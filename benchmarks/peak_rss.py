"""A process's own peak resident memory, and a runner that reports it for any script.

``getrusage().ru_maxrss`` is no use for a subprocess: Linux carries the high-water mark across
fork and exec, so a child started by a 1.5 GB parent reports at least 1.5 GB. ``VmHWM`` in
``/proc/self/status`` belongs to the child's own address space.

    python benchmarks/peak_rss.py cli.py precompute data.jsonl -o out.zarr
    # runs cli.py as __main__, then prints "peak_rss_bytes <n>" as the last line of stderr
"""

from __future__ import annotations

import atexit
import resource
import runpy
import sys
from pathlib import Path

REPORT_PREFIX = "peak_rss_bytes"


def peak_rss_bytes() -> int:
    """Peak RSS of this process's own address space (``ru_maxrss`` where there is no /proc)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reported_peak(stderr: str) -> int:
    """The figure a ``peak_rss.py`` run printed on ``stderr``."""
    line = stderr.strip().splitlines()[-1]
    prefix, value = line.split()
    if prefix != REPORT_PREFIX:
        raise ValueError(f"no peak RSS report at the end of stderr: {line!r}")
    return int(value)


if __name__ == "__main__":
    atexit.register(lambda: print(REPORT_PREFIX, peak_rss_bytes(), file=sys.stderr, flush=True))
    sys.argv = sys.argv[1:]
    sys.path[0] = str(Path(sys.argv[0]).resolve().parent)  # as if the script were run directly
    runpy.run_path(sys.argv[0], run_name="__main__")
