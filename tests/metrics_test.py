"""Tests of synthjax.core.metrics: JSON lines, fail-fast on NaN, resume, and TF-free event files."""

import json
import math
import struct

import numpy as np
import pytest

from synthjax.core import metrics
from synthjax.core.metrics import MetricsWriter, read_metrics

# ---------------------------------------------------------------------------------------------
# A minimal reader of TensorBoard event files, independent of the writer's encoder.


def _read_varint(buf, pos):
    result, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _fields(buf):
    """Yields (field_number, wire_type, value) of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        yield field, wire, value


def _records(data):
    """Payloads of a TFRecord stream, checking both masked CRCs of every frame."""
    pos = 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        assert length_crc == metrics.masked_crc32c(header)
        payload = data[pos + 12 : pos + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        assert payload_crc == metrics.masked_crc32c(payload)
        pos += 16 + length
        yield payload


def _decode_event(payload):
    event = {"scalars": {}}
    for field, _, value in _fields(payload):
        if field == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2:
            event["step"] = value
        elif field == 3:
            event["file_version"] = value.decode()
        elif field == 5:
            for _, _, summary_value in _fields(value):
                parts = {f: v for f, _, v in _fields(summary_value)}
                event["scalars"][parts[1].decode()] = struct.unpack("<f", parts[2])[0]
        elif field == 7:
            event["session_log"] = dict((f, v) for f, _, v in _fields(value))
    return event


def _read_events(stage_dir):
    files = sorted((stage_dir / "tensorboard").glob("events.out.tfevents.*"))
    return files, [[_decode_event(p) for p in _records(f.read_bytes())] for f in files]


# ---------------------------------------------------------------------------------------------


def test_crc32c_check_value():
    assert metrics.crc32c(b"123456789") == 0xE3069283
    assert metrics.crc32c(b"") == 0


def test_writes_json_lines_with_python_types(tmp_path):
    with MetricsWriter(tmp_path / "gan", "gan") as writer:
        writer.write(1, {"loss": np.float32(0.5), "n": np.int64(3), "phase": "warmup"})
        writer.write(2, {"loss": 0.25, "acc": np.array(0.75)})
    lines = (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "stage": "gan", "loss": 0.5, "n": 3, "phase": "warmup"},
        {"step": 2, "stage": "gan", "loss": 0.25, "acc": 0.75},
    ]
    assert read_metrics(tmp_path / "gan") == read_metrics(tmp_path / "gan" / "metrics.jsonl")


def test_accepts_zero_dim_jax_arrays(tmp_path):
    jnp = pytest.importorskip("jax.numpy")
    with MetricsWriter(tmp_path, "gan") as writer:
        writer.write(jnp.asarray(5), {"loss": jnp.asarray(1.5, jnp.float32)})
    assert read_metrics(tmp_path) == [{"step": 5, "stage": "gan", "loss": 1.5}]


def test_rejects_arrays_and_reserved_names(tmp_path):
    with MetricsWriter(tmp_path, "gan") as writer:
        with pytest.raises(TypeError, match="'loss'"):
            writer.write(1, {"loss": np.zeros(3)})
        with pytest.raises(ValueError, match="reserved"):
            writer.write(1, {"step": 3})


@pytest.mark.parametrize("bad", [math.nan, math.inf, np.float32("nan")])
def test_non_finite_raises_after_writing(tmp_path, bad):
    with MetricsWriter(tmp_path, "gan") as writer:
        writer.write(1, {"loss_d": 0.1})
        with pytest.raises(FloatingPointError, match=r"'loss_g'.*step 2"):
            writer.write(2, {"loss_d": 0.2, "loss_g": bad})
    records = read_metrics(tmp_path)
    assert len(records) == 2
    assert not math.isfinite(records[1]["loss_g"])


def test_resume_drops_lines_after_the_checkpoint(tmp_path):
    with MetricsWriter(tmp_path, "gan") as writer:
        for step in range(1, 7):
            writer.write(step, {"loss": float(step)})
    with MetricsWriter(tmp_path, "gan", resume_step=4) as writer:
        writer.write(5, {"loss": 50.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 4.0),
        (5, 50.0),
    ]
    assert not list(tmp_path.glob("*.tmp"))

    with MetricsWriter(tmp_path, "gan") as writer:  # no resume step: plain append
        writer.write(6, {"loss": 60.0})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_torn_last_line_is_dropped_on_open(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "stage": "gan"}\n{"step": 2, "sta')
    assert read_metrics(tmp_path) == [{"step": 1, "stage": "gan"}]
    with MetricsWriter(tmp_path, "gan") as writer:
        writer.write(2, {"loss": 1.0})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_disabled_writer_is_a_no_op(tmp_path):
    stage_dir = tmp_path / "gan"
    with MetricsWriter(stage_dir, "gan", enabled=False, resume_step=0) as writer:
        writer.write(1, {"loss": math.nan})  # not even NaN raises on other processes
    assert not stage_dir.exists()


def test_event_files_round_trip(tmp_path):
    with MetricsWriter(tmp_path, "gan") as writer:
        writer.write(1, {"loss_d": -0.5, "loss_g": 1.25, "phase": "a"})
        writer.write(2, {"phase": "text only: no event"})
        writer.write(3, {"kimg": 12})
    with MetricsWriter(tmp_path, "gan", resume_step=2) as writer:
        writer.write(3, {"loss_d": 0.75})
    files, events = _read_events(tmp_path)
    assert len(files) == 2
    assert all(f.name.split(".")[-1].isdigit() for f in files)
    first, second = events
    assert first[0]["file_version"] == "brain.Event:2"
    assert [(e["step"], e["scalars"]) for e in first[1:]] == [
        (1, {"loss_d": -0.5, "loss_g": 1.25}),
        (3, {"kimg": 12.0}),
    ]
    assert second[0]["file_version"] == "brain.Event:2"
    assert second[1]["step"] == 3 and second[1]["session_log"] == {1: 1}  # SessionLog.START
    assert (second[2]["step"], second[2]["scalars"]) == (3, {"loss_d": 0.75})
    assert all(e["wall_time"] > 1e9 for e in first + second)


def test_event_files_read_by_tensorboard(tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    with MetricsWriter(tmp_path, "gan") as writer:
        for step in range(1, 5):
            writer.write(step, {"loss": step / 2})
    with MetricsWriter(tmp_path, "gan", resume_step=2) as writer:
        writer.write(3, {"loss": 9.0})
    acc = accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    points = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert points == [(1, 0.5), (2, 1.0), (3, 9.0)]


def test_a_bucket_workdir_gets_whole_uploads_and_resumes(tmp_path, monkeypatch):
    """A stage dir that cannot be appended to (gs://): lines go to local copies, uploaded
    whole at most every REMOTE_SYNC_S and on close; a resumed writer starts from the upload.
    Here the 'bucket' is a local folder that the writer must treat as remote."""
    remote = tmp_path / "bucket" / "gan"
    monkeypatch.setattr(metrics, "is_remote", lambda path: str(path).startswith(str(remote)))
    monkeypatch.setattr(metrics, "REMOTE_SYNC_S", 3600.0)
    with MetricsWriter(remote, "gan") as writer:
        local = writer.path
        assert not str(local).startswith(str(remote))
        writer.write(1, {"loss": 1.0})  # the first write uploads (nothing uploaded yet)
        writer.write(2, {"loss": 2.0})  # within REMOTE_SYNC_S: only local
        assert [r["step"] for r in read_metrics(remote)] == [1]
    assert [r["step"] for r in read_metrics(remote)] == [1, 2]  # close uploads the rest
    assert not local.exists()  # the local copies are gone
    assert len(list((remote / "tensorboard").glob("events.out.tfevents.*"))) == 1
    with MetricsWriter(remote, "gan", resume_step=1) as writer:
        writer.write(2, {"loss": 2.5})
    assert [(r["step"], r["loss"]) for r in read_metrics(remote)] == [(1, 1.0), (2, 2.5)]
