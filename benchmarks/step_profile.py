"""Benchmark: where the GAN train step spends its time, op by op.

`train_step.py` says how fast the step is; this says where its time goes. It compiles the
real jitted GAN step (`step_setup.gan_step`, the quickstart's sizes unless `--config`),
runs `--steps` of it under the JAX profiler, and matches every timed XLA operation of the
trace to its instruction in the compiled program (same name), which carries the JAX
operation and the model scope it came from (`metadata op_name`). It prints:

- by kind: matrix products and convolutions (XLA:CPU hands them to YNNPACK, oneDNN or
  Eigen), fused elementwise and reduction loops, layout changes (transposes, copies) and
  other data movement (pads, slices, concatenations);
- by part of the step: generator and discriminator forward passes, their backward passes,
  the gradient penalty's double backward, the optimiser and the EMA (the scopes
  `train_step` names);
- the `--top` most expensive operations with their op_name.

Shares are of the summed operation time; XLA:CPU may run independent operations on both
cores at once, so the sum can exceed the wall time, which is printed beside it.

    python benchmarks/step_profile.py                       # cpD-GAN, 32x32, batch 32
    python benchmarks/step_profile.py --arch prog --resolution 64
    python benchmarks/step_profile.py --fmap-max 128
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import jax

from synthjax.core import parallel

sys.path.insert(0, str(Path(__file__).parent))
import step_setup  # the GAN step as train_step.py builds and times it

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\b([a-z\-]+)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OPERAND = re.compile(r"%([\w.\-]+)")

_MATMUL = {"convolution", "dot", "custom-call"}
_LAYOUT = {"transpose", "copy", "bitcast", "copy-start", "copy-done"}
_MOVEMENT = {"pad", "slice", "concatenate", "dynamic-slice", "dynamic-update-slice", "gather"}


def instructions(hlo_text: str) -> dict[str, dict[str, str]]:
    """Instruction name -> {'opcode', 'op_name', 'line'} of a compiled module.

    An instruction whose own metadata is empty (XLA drops it on some fusions, e.g. the
    kernel gradients of convolutions) takes the op_name of the first instruction inside it
    that has one, else that of its operands (a backward one first: a kernel gradient's
    operands are the layer's input and the gradient of its output).
    """
    out, computation_op_name, calls, operands = {}, {}, {}, {}
    computation = ""
    for line in hlo_text.splitlines():
        if line.endswith("{") and " = " not in line:
            computation = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, opcode = match.groups()
        op_name = _OP_NAME.search(line)
        op_name = op_name.group(1) if op_name else ""
        if op_name:
            computation_op_name.setdefault(computation, op_name)
        called = _CALLS.search(line)
        if called:
            calls[name] = called.group(1)
        operands[name] = _OPERAND.findall(line.split(" = ", 1)[1].split("), ", 1)[0])
        out[name] = {"opcode": opcode, "op_name": op_name, "line": line}

    def inherited(name: str, depth: int) -> str:
        info = out.get(name)
        if info is None:
            return ""
        if info["op_name"]:
            return info["op_name"]
        if name in calls and computation_op_name.get(calls[name]):
            return computation_op_name[calls[name]]
        if depth == 0:
            return ""
        names = [inherited(o, depth - 1) for o in operands.get(name, ())]
        return next((n for n in names if "transpose(" in n), next((n for n in names if n), ""))

    for name, info in out.items():
        info["op_name"] = inherited(name, depth=3)
    return out


def kind_of(name: str, info: dict[str, str]) -> str:
    opcode, line = info["opcode"], info["line"]
    if opcode in _MATMUL or "ynn_fusion" in name or "onednn" in line or "__ynn" in line:
        return "matmul / convolution"
    if opcode == "fusion":
        if "transpose" in name or "copy" in name:
            return "layout (transpose, copy)"
        if any(m.replace("-", "_") in name for m in _MOVEMENT):
            return "data movement (pad, slice, concat)"
        return "fused elementwise / reductions"
    if opcode in _LAYOUT:
        return "layout (transpose, copy)"
    if opcode in _MOVEMENT:
        return "data movement (pad, slice, concat)"
    return "fused elementwise / reductions" if opcode in ("reduce", "select") else opcode


def part_of(op_name: str) -> str:
    """The part of the GAN step an operation belongs to, from the scopes in its op_name."""
    backward = "transpose(" in op_name
    if "gradient_penalty" in op_name:
        return "D: gradient penalty (double backward)"
    if "ema" in op_name.split("/"):
        return "EMA"
    if "optimizer" in op_name:
        return "optimisers (Adam)"
    if "d_update" in op_name:
        return "D update: D backward" if backward else "D update: G and D forward"
    if "g_update" in op_name:
        return "G update: G and D backward" if backward else "G update: G and D forward"
    return "other"


def trace_durations(logdir: Path) -> collections.Counter:
    """Summed microseconds per event name in the newest trace under `logdir`."""
    path = sorted(logdir.glob("**/*.trace.json.gz"))[-1]
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals: collections.Counter = collections.Counter()
    for event in events:
        if event.get("ph") == "X":
            totals[event["name"]] += event.get("dur", 0.0)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    step_setup.add_step_flags(parser)
    parser.add_argument("--arch", default="cpd", choices=("cpd", "prog"))
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    cfg = step_setup.step_config(args)
    mesh = parallel.make_mesh(-1)
    step, state, inputs = step_setup.gan_step(
        cfg, args.resolution, args.batch, mesh, arch=args.arch
    )
    program = instructions(step.lower(state, *inputs).compile().as_text())
    for _ in range(2):  # warm up (the first call compiles)
        state, metrics = step(state, *inputs)
    jax.block_until_ready(metrics)

    with tempfile.TemporaryDirectory() as logdir:
        jax.profiler.start_trace(logdir)
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step(state, *inputs)
        jax.block_until_ready(metrics)
        wall = (time.perf_counter() - start) / args.steps
        jax.profiler.stop_trace()
        durations = trace_durations(Path(logdir))

    ops = {name: us / args.steps / 1e3 for name, us in durations.items() if name in program}
    if not ops:
        sys.exit(
            "the trace holds no XLA operations: this JAX build's profiler does not "
            "record them on this backend"
        )
    total = sum(ops.values())
    print(
        f"{args.arch} GAN step, {args.resolution}x{args.resolution}, batch {args.batch}, "
        f"fmap_max {cfg.gan[cfg.gan.arch].fmap_max}: {1e3 * wall:.1f} ms per step wall, "
        f"{total:.1f} ms summed over {len(ops)} timed operations"
    )
    for title, key in (("kind", kind_of), ("part of the step", None)):
        shares: collections.Counter = collections.Counter()
        for name, ms in ops.items():
            label = key(name, program[name]) if key else part_of(program[name]["op_name"])
            shares[label] += ms
        print(f"\nby {title}:")
        for label, ms in shares.most_common():
            print(f"  {label:<40} {ms:>8.1f} ms {ms / total:>6.1%}")
    print(f"\nthe {args.top} most expensive operations:")
    for name, ms in sorted(ops.items(), key=lambda item: -item[1])[: args.top]:
        info = program[name]
        op_name = info["op_name"].removeprefix("jit(train_step)/") or name
        if len(op_name) > 100:
            op_name = "..." + op_name[-97:]
        print(f"  {ms:>7.2f} ms {ms / total:>6.1%}  {kind_of(name, info):<34} {op_name}")


if __name__ == "__main__":
    main()
