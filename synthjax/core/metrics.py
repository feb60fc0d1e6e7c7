"""The one metrics writer: JSON lines (the source of truth) plus TensorBoard event files.

Every stage (classifier_real, gan, classifier_synthetic, evaluate) writes its scalars through
`MetricsWriter` into `DIR/<stage>/metrics.jsonl`, one `{"step", "stage", ...}` object per
line, and mirrors the numbers into `DIR/<stage>/tensorboard/` for live curves. The analysis
code and notebooks read the JSON lines back with `read_metrics`.

TensorBoard files are written without TensorFlow: an event file is a sequence of TFRecord
frames around `tensorflow.Event` protocol buffers, both simple enough to encode by hand
(layouts in `_event_bytes` and `_tfrecord_frame`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging
from etils import epath

from synthjax.core.workdir import is_local

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
# A workdir in a bucket (gs://...) cannot be appended to: the writer keeps local copies and
# uploads them whole at most this often (and on close, and before raising on a NaN).
REMOTE_SYNC_S = 30.0


def is_remote(path: str | os.PathLike) -> bool:
    return not is_local(path)


# ---------------------------------------------------------------------------------------------
# TFRecord framing and Event protos.


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            # 0x82F63B78 is the Castagnoli polynomial in reflected bit order.
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, the checksum TFRecord framing uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotated and offset so CRCs of CRCs do not collide trivially."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _tfrecord_frame(payload: bytes) -> bytes:
    """uint64 length, masked CRC of the length bytes, payload, masked CRC of the payload."""
    length = struct.pack("<Q", len(payload))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + payload
        + struct.pack("<I", masked_crc32c(payload))
    )


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # int64 negatives are encoded as 10-byte two's complement
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event_bytes(
    wall_time: float,
    step: int,
    *,
    file_version: str | None = None,
    scalars: Mapping[str, float] | None = None,
    session_start: bool = False,
) -> bytes:
    """Serialises a `tensorflow.Event`.

    Fields used: wall_time (1, double), step (2, int64), and one of the `what` oneof:
    file_version (3, string), summary (5, Summary{repeated Value value = 1 {string tag = 1;
    float simple_value = 2}}) or session_log (7, SessionLog{status = 1 (enum, START = 1)}).
    """
    if sum([file_version is not None, bool(scalars), session_start]) > 1:
        raise ValueError("an Event holds only one of file_version, summary and session_log")
    out = bytearray(b"\x09" + struct.pack("<d", wall_time))
    out += b"\x10" + _varint(step)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _length_delimited(
                1, _length_delimited(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
            )
            for tag, value in scalars.items()
        )
        out += _length_delimited(5, summary)
    if session_start:
        out += _length_delimited(7, b"\x08\x01")
    return bytes(out)


def _writer_tag() -> str:
    """Who writes an event file, without the host name: `p<process index>`.

    TensorFlow's writers put the host name here; a workdir's files travel (copied, shared,
    uploaded with a report), and a hospital machine's name is not theirs to carry. Only
    process 0 writes metrics; the pid and the counter after the tag keep names apart, and
    names of one writer sort in the order they were made (TensorBoard reads them so).
    """
    jax = sys.modules.get("jax")  # only if the job imported it: metrics need no JAX
    return f"p{jax.process_index() if jax is not None else 0}"


def _event_file_path(directory: Path) -> Path:
    """A fresh `events.out.tfevents.<time>.<writer>.<pid>.<n>` name, TensorFlow's layout with
    `_writer_tag()` in the host name's place (TensorBoard matches `*tfevents*` only)."""
    stem = f"events.out.tfevents.{int(time.time())}.{_writer_tag()}.{os.getpid()}"
    n = 0
    while (directory / f"{stem}.{n}").exists():
        n += 1
    return directory / f"{stem}.{n}"


# ---------------------------------------------------------------------------------------------
# JSON lines.


def _to_python_scalar(name: str, value: Any) -> bool | int | float | str:
    """Converts a metric value to a JSON-able Python scalar, refusing arrays."""
    if isinstance(value, (str, bool, int, float)):
        return value
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(value, jax.Array):
        # An explicit transfer, allowed under jax_transfer_guard("disallow").
        value = jax.device_get(value)
    array = np.asarray(value)
    if array.shape != ():
        raise TypeError(f"metric {name!r} must be a scalar, got an array of shape {array.shape}")
    item = array.item()
    if not isinstance(item, (bool, int, float, str)):
        raise TypeError(f"metric {name!r} has unsupported type {type(value).__name__}")
    return item


def _parse_lines(text: str, path: Path) -> list[dict[str, Any]]:
    """Parses JSON lines; a torn last line (killed mid-write) is dropped, others are errors."""
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines) and not text.endswith("\n"):
                logging.warning("%s: ignoring a partly written last line", path)
                continue
            raise ValueError(f"{path}: line {number} is not valid JSON ({error})") from error
    return records


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a metrics.jsonl file (or a stage directory holding one) into a list of dicts.

    NaN and infinite values, which the writer records before failing, come back as floats.
    """
    path = epath.Path(path) if is_remote(path) else Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    return _parse_lines(path.read_text(), path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class MetricsWriter:
    """Appends one metrics record per call to JSON lines and TensorBoard, on process 0 only.

    Usage:
      with MetricsWriter(workdir / "gan", "gan", enabled=jax.process_index() == 0,
                         resume_step=restored_step) as writer:
        writer.write(step, {"loss_d": loss_d, "loss_g": loss_g, "lr": lr})

    A float metric that is NaN or infinite raises FloatingPointError naming it, after its
    line has been written and flushed, so a diverged run stops at once and keeps the evidence.
    """

    def __init__(
        self,
        stage_dir: str | os.PathLike,
        stage: str,
        *,
        enabled: bool = True,
        resume_step: int | None = None,
    ):
        """Opens (or creates) `stage_dir/metrics.jsonl` and a new TensorBoard event file.

        Args:
          stage_dir: the stage's directory, e.g. `DIR/gan`; created if missing.
          stage: stage name written into every line.
          enabled: False on processes other than 0: nothing is opened or written.
          resume_step: the step of the checkpoint a resumed run starts from. Lines with a
            larger step (written after that checkpoint, then lost with the crash) are dropped
            from metrics.jsonl by an atomic rewrite, and TensorBoard is told to discard its
            own later points. None appends to whatever is there.
        """
        self.stage = stage
        self.enabled = enabled
        self._jsonl = None
        self._events = None
        self._remote: epath.Path | None = None
        self._synced = -math.inf  # the first write uploads, however new the machine
        if is_remote(stage_dir):
            self._remote = epath.Path(stage_dir)
            stage_dir = tempfile.mkdtemp(prefix=f"synthjax-{stage}-")  # the local copies
        self.path = Path(stage_dir) / METRICS_FILE
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._remote is not None and (self._remote / METRICS_FILE).exists():
            self.path.write_bytes((self._remote / METRICS_FILE).read_bytes())
        if self.path.exists():
            self._repair(resume_step)
        self._jsonl = open(self.path, "a")
        tb_dir = self.path.parent / TENSORBOARD_DIR
        tb_dir.mkdir(exist_ok=True)
        self._events_path = _event_file_path(tb_dir)
        self._events = open(self._events_path, "ab")
        now = time.time()
        self._events.write(_tfrecord_frame(_event_bytes(now, 0, file_version="brain.Event:2")))
        if resume_step is not None:
            # TensorBoard drops points at or after a SessionLog.START's step, the same
            # cleanup as for metrics.jsonl but for the older event files.
            self._events.write(
                _tfrecord_frame(_event_bytes(now, resume_step + 1, session_start=True))
            )
        self._events.flush()

    def _repair(self, resume_step: int | None) -> None:
        """Drops lines past `resume_step` and a torn last line, rewriting the file atomically."""
        text = self.path.read_text()
        if resume_step is None and (not text or text.endswith("\n")):
            return
        records = _parse_lines(text, self.path)
        if resume_step is not None:
            kept = [r for r in records if r.get("step", 0) <= resume_step]
            if len(kept) < len(records):
                logging.info(
                    "%s: dropping %d lines after resume step %d",
                    self.path,
                    len(records) - len(kept),
                    resume_step,
                )
            records = kept
        _atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Writes one record for `step`.

        Args:
          step: the training step the metrics belong to (int; numpy/jax integers accepted).
          metrics: name -> value; values are Python or numpy scalars, 0-d numpy or jax
            arrays, or strings. Numbers also go to TensorBoard as float32 scalars.

        Raises:
          FloatingPointError: a float metric is NaN or inf (raised after writing the line).
          TypeError: a value is not a scalar.
          ValueError: a metric is called "step" or "stage".
        """
        if not self.enabled:
            return
        if self._jsonl is None:
            raise ValueError(f"metrics writer for {self.path} is closed")
        step = int(_to_python_scalar("step", step))
        record: dict[str, Any] = {"step": step, "stage": self.stage}
        for name, value in metrics.items():
            if name in record:
                raise ValueError(f"metric name {name!r} is reserved for the record itself")
            record[name] = _to_python_scalar(name, value)
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        scalars = {
            name: float(value)
            for name, value in record.items()
            if name not in ("step", "stage") and isinstance(value, (int, float))
        }
        if scalars:
            self._events.write(_tfrecord_frame(_event_bytes(time.time(), step, scalars=scalars)))
            self._events.flush()
        self._upload()
        for name, value in record.items():
            if isinstance(value, float) and not math.isfinite(value):
                self._upload(force=True)
                raise FloatingPointError(
                    f"metric {name!r} is {value} at step {step} of stage {self.stage!r}; "
                    f"the line was kept in {self.path}"
                )

    def _upload(self, force: bool = False) -> None:
        """A remote stage dir: copies both local files up, whole (at most every
        REMOTE_SYNC_S seconds unless forced)."""
        if self._remote is None or self._jsonl is None:
            return
        now = time.monotonic()
        if not force and now - self._synced < REMOTE_SYNC_S:
            return
        self._synced = now
        (self._remote / TENSORBOARD_DIR).mkdir(parents=True, exist_ok=True)
        (self._remote / METRICS_FILE).write_bytes(self.path.read_bytes())
        remote_events = self._remote / TENSORBOARD_DIR / self._events_path.name
        remote_events.write_bytes(self._events_path.read_bytes())

    def close(self) -> None:
        """Closes both files (uploading them last, for a remote stage dir); safe to call more
        than once."""
        self._upload(force=True)
        for f in (self._jsonl, self._events):
            if f is not None:
                f.close()
        self._jsonl = self._events = None
        if self._remote is not None:
            shutil.rmtree(self.path.parent, ignore_errors=True)

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
