"""Run a command and record the memory of its whole process tree over time (Linux ``/proc``).

A run of this package is several processes (the decode workers of an image folder, the latency
table's fresh measurement processes, DataLoader workers), so the peak of the main process alone
(``/usr/bin/time``'s maximum resident set) understates what a machine must hold. This samples
every process descended from the command at a fixed interval and records

* the peak of the tree's summed RSS and of its summed PSS (proportional set size: shared pages,
  such as the torch libraries every process maps, counted once in all),
* the peak RSS of any single process (with its command line), and the kernel's own maximum
  resident set of the largest process (``getrusage``, which sees spikes between samples),
* a timeline (seconds, processes, RSS MiB, PSS MiB) as CSV beside the JSON.

    python tools/rss_watch.py --out runs/rss_100k.json -- python -m hwnas_darts.fit data.root=...

The JSON and CSV are written atomically when the command ends (also when it fails or is
interrupted); the command's exit status is passed on. Timelines of several runs on one plot:

    python tools/rss_watch.py plot --out docs/img/rss.png 10k=runs/p10k/rss.csv 100k=runs/p100k/rss.csv
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data import rss_mib  # noqa: E402
from hwnas_darts.io import atomic_path, atomic_write_json, atomic_write_text  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: the fields after the last ')' are fixed
        fields = stat[stat.rfind(b")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(entry.name))
    return kids


def tree(root: int) -> list[int]:
    """``root`` and every live process descended from it."""
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def memory(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) in bytes of one process, or None if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None
    pss = rss
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return rss, pss


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def plot(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="rss_watch.py plot", description="memory timelines of several runs")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("runs", nargs="+", help="LABEL=TIMELINE.csv (written by a watched run)")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for spec in args.runs:
        label, _, path = spec.rpartition("=")
        rows = Path(path).read_text().splitlines() if Path(path).is_file() else []
        if not rows or rows[0] != "t_s,processes,rss_mib,pss_mib":
            ap.error(f"{path}: not a timeline written by rss_watch.py (header t_s,processes,rss_mib,pss_mib)")
        t, pss = zip(*[(float(r.split(",")[0]) / 60, float(r.split(",")[3])) for r in rows[1:]]) if rows[1:] else ((), ())
        ax.plot(t, pss, label=label or Path(path).parent.name)
    ax.set_xlabel("minutes since the start of the run")
    ax.set_ylabel("PSS of the process tree (MiB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(args.out, keep_extension=True) as tmp:  # savefig picks the format by the extension
        fig.savefig(tmp, dpi=110)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot"]:
        return plot(argv[1:])
    if "--" not in argv:
        print("usage: rss_watch.py --out FILE.json [--interval S] -- COMMAND ...", file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON summary; the timeline goes beside it as .csv")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    args = ap.parse_args(argv[:cut])
    command = argv[cut + 1:]
    if not command:
        ap.error("no command after --")
    if args.interval <= 0:
        ap.error(f"--interval must be positive, got {args.interval}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)  # an unwritable place fails now, not after the command

    start = time.time()
    try:
        proc = subprocess.Popen(command)
    except OSError as exc:  # not found, not executable
        print(f"rss_watch: cannot start {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    timeline: list[tuple[float, int, float, float]] = []
    peak = {"rss_sum": 0, "pss_sum": 0, "rss_single": 0, "single_cmd": "", "t_rss_sum": 0.0}
    procs_seen: set[int] = set()
    old = signal.signal(signal.SIGINT, lambda *_: proc.send_signal(signal.SIGINT))
    try:
        while proc.poll() is None:
            t = time.time() - start
            rss_sum = pss_sum = 0
            pids = tree(proc.pid)
            for pid in pids:
                m = memory(pid)
                if m is None:
                    continue
                procs_seen.add(pid)
                rss_sum += m[0]
                pss_sum += m[1]
                if m[0] > peak["rss_single"]:
                    peak["rss_single"], peak["single_cmd"] = m[0], cmdline(pid)
            if rss_sum > peak["rss_sum"]:
                peak["rss_sum"], peak["t_rss_sum"] = rss_sum, t
            peak["pss_sum"] = max(peak["pss_sum"], pss_sum)
            timeline.append((round(t, 2), len(pids), round(rss_sum / 2**20, 1), round(pss_sum / 2**20, 1)))
            time.sleep(args.interval)
    finally:
        rc = proc.wait()
        signal.signal(signal.SIGINT, old)
        summary = {
            "command": command,
            "exit_code": rc,
            "wall_s": round(time.time() - start, 1),
            "interval_s": args.interval,
            "samples": len(timeline),
            "processes_seen": len(procs_seen),
            "peak_tree_rss_mib": round(peak["rss_sum"] / 2**20, 1),
            "peak_tree_rss_at_s": round(peak["t_rss_sum"], 1),
            "peak_tree_pss_mib": round(peak["pss_sum"] / 2**20, 1),
            "peak_process_rss_mib": round(peak["rss_single"] / 2**20, 1),
            "peak_process": peak["single_cmd"],
            "kernel_max_rss_largest_process_mib": round(rss_mib(resource.RUSAGE_CHILDREN), 1),
        }
        atomic_write_text(out.with_suffix(".csv"), "t_s,processes,rss_mib,pss_mib\n"
                          + "".join(f"{t},{n},{r},{p}\n" for t, n, r, p in timeline))
        atomic_write_json(out, summary)
        print(out.read_text(), file=sys.stderr, end="")
    return rc


if __name__ == "__main__":
    sys.exit(main())
