r"""Peak memory and throughput of preparing the brain-CT phantom from DICOM.

Writes the CT phantom (RSNA layout, one DICOM per slice) with about `--slices` slices, then
builds it with the RSNA builder in a child process while sampling the resident memory of
that process and all its workers every 0.1 s. Prints slices/s for both steps and the peak
RSS of the whole process tree (the number that must stay bounded however large the
dataset is), plus each process's own peak.

  python benchmarks/prepare_memory.py --slices 20000 --image-size 256 --resolution 256

Run it on an otherwise idle machine: other load changes the rates, not the memory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")

_BUILD = """
import sys, time, json
from synthjax.data import rsna_ich
start = time.monotonic()
_, report = rsna_ich.prepare_rsna_ich(sys.argv[1], sys.argv[2], resolution=int(sys.argv[3]),
    base_resolution=int(sys.argv[4]), windows=sys.argv[5], context=int(sys.argv[6]),
    workers=int(sys.argv[7]))
print(json.dumps({"seconds": time.monotonic() - start, "kept": report["counts"]["kept"]}))
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(_children(current))
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


def build_with_memory_trace(args, raw: Path, data_dir: Path) -> dict:
    """Runs the build in a child process; returns its timing and the sampled peaks."""
    command = [
        sys.executable,
        "-c",
        _BUILD,
        str(raw),
        str(data_dir),
        str(args.resolution),
        str(args.image_size),
        args.windows,
        str(args.context),
        str(args.workers),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak_tree, peak_each, processes = 0, {}, set()
    while proc.poll() is None:
        pids = _tree(proc.pid)
        processes.update(pids)
        sizes = {pid: _rss(pid) for pid in pids}
        peak_tree = max(peak_tree, sum(sizes.values()))
        for pid, size in sizes.items():
            peak_each[pid] = max(peak_each.get(pid, 0), size)
        time.sleep(0.1)
    out = proc.stdout.read().strip().splitlines()
    if proc.returncode != 0:
        raise SystemExit(f"the build failed (exit {proc.returncode})")
    import json

    result = json.loads(out[-1])
    result.update(
        peak_tree_bytes=peak_tree,
        peak_main_bytes=peak_each.get(proc.pid, 0),
        peak_worker_bytes=max((v for k, v in peak_each.items() if k != proc.pid), default=0),
        processes=len(processes),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=20_000)
    parser.add_argument("--image-size", type=int, default=256, help="phantom DICOM side")
    parser.add_argument("--resolution", type=int, default=256, help="stored side")
    parser.add_argument("--windows", default="brain,subdural,bone")
    parser.add_argument("--context", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="0 = every core")
    parser.add_argument("--keep", default="", help="reuse/keep the phantom in this folder")
    args = parser.parse_args()

    from synthjax.data.phantoms.ct import writer as phantom_ct
    from synthjax.data.workers import resolve_workers

    mean_slices = 24  # slices_per_series=(16, 32)
    patients = max(1, round(args.slices / mean_slices))
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(args.keep) if args.keep else Path(tmp) / "raw"
        print(f"cores: {resolve_workers(args.workers)} workers of {os.cpu_count()} CPUs")
        if not (raw / phantom_ct.CSV_NAME).exists():
            start = time.monotonic()
            stats = phantom_ct.write_rsna_phantom(
                raw,
                num_patients=patients,
                image_size=args.image_size,
                slices_per_series=(16, 32),
                noise=1.0,
                subtlety=1.0,
                seed=0,
                workers=args.workers or None,
            )
            seconds = time.monotonic() - start
            print(
                f"phantom: {stats['slices']} DICOM slices at {args.image_size}px from "
                f"{patients} patients in {seconds:.0f} s = {stats['slices'] / seconds:.0f} "
                "slices/s"
            )
        result = build_with_memory_trace(args, raw, Path(tmp) / "data")
        gib = 1024**3
        print(
            f"build:   {result['kept']} slices -> {args.resolution}px x "
            f"{len(args.windows.split(','))} windows (context {args.context}) in "
            f"{result['seconds']:.0f} s = {result['kept'] / result['seconds']:.0f} slices/s"
        )
        print(
            f"memory:  peak RSS of the process tree {result['peak_tree_bytes'] / gib:.2f} GiB "
            f"(main {result['peak_main_bytes'] / gib:.2f} GiB, largest worker "
            f"{result['peak_worker_bytes'] / gib:.2f} GiB, {result['processes']} processes)"
        )


if __name__ == "__main__":
    main()
