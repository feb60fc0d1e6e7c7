"""The reader-study kit's scoring: the readers' answers CSVs joined to the kit's key.

Accuracy, sensitivity (synthetic called synthetic), specificity (real called real), an
exact two-sided binomial test of the accuracy against chance (0.5) with its 95%
Clopper-Pearson interval, and the mean confidence of right and wrong answers: overall, per
resolution, per reader and per reader x resolution, written as `scores.json` and
`scores.md` into the kit directory and printed as a table (`scores_table`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from etils import epath

from synthjax.reader_study.kit import SCORES_JSON, SCORES_MD, Log, ReaderStudyError, load_key

# The CSV the page writes: these columns in this order, then `kit` (the kit id).
CSV_COLUMNS = ("reader", "item", "answer", "confidence", "time_ms", "timestamp")
KIT_COLUMN = "kit"
ANSWERS = ("real", "synthetic")  # the positive class is "synthetic"
CONFIDENCES = range(1, 6)


@dataclasses.dataclass(frozen=True)
class Answer:
    reader: str
    item: int
    answer: str
    confidence: int | None
    time_ms: int | None
    timestamp: str


def _optional_int(text: str | None, what: str, where: str) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise ReaderStudyError(f"{where}: {what} {text!r} is not a number") from None


def read_answers(path: str | os.PathLike, key: dict[str, Any]) -> list[Answer]:
    """The rows of one answers CSV, checked against the key."""
    path = epath.Path(path)
    if not path.exists():
        raise ReaderStudyError(f"no answers file at {path}")
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ReaderStudyError(
            f"{path}: not a reader-study answers CSV (missing columns {missing}; expected "
            f"{','.join(CSV_COLUMNS)})"
        )
    known = {int(item["item"]) for item in key["items"]}
    answers = []
    for line, row in enumerate(reader, start=2):
        where = f"{path}, line {line}"
        kit = (row.get(KIT_COLUMN) or "").strip()
        if kit and kit != key["kit_id"]:
            raise ReaderStudyError(
                f"{where}: these answers are for kit {kit}, but the key in --kit is for kit "
                f"{key['kit_id']}: pass the kit directory the reader's page came from"
            )
        item = _optional_int(row["item"], "item", where)
        if item is None or item not in known:
            raise ReaderStudyError(
                f"{where}: item {row['item']!r} is not in kit {key['kit_id']} (items 1-"
                f"{len(known)}): these answers come from another kit or were edited"
            )
        answer = (row["answer"] or "").strip().lower()
        if answer not in ANSWERS:
            raise ReaderStudyError(f"{where}: answer {row['answer']!r} is not real or synthetic")
        confidence = _optional_int(row["confidence"], "confidence", where)
        if confidence is not None and confidence not in CONFIDENCES:
            raise ReaderStudyError(f"{where}: confidence {confidence} is not between 1 and 5")
        reader_name = (row["reader"] or "").strip()
        if not reader_name:
            raise ReaderStudyError(f"{where}: no reader name")
        answers.append(
            Answer(
                reader=reader_name,
                item=item,
                answer=answer,
                confidence=confidence,
                time_ms=_optional_int(row["time_ms"], "time_ms", where),
                timestamp=(row["timestamp"] or "").strip(),
            )
        )
    return answers


def _deduplicate(answers: Iterable[Answer]) -> tuple[list[Answer], int]:
    """One answer per (reader, item): the latest by timestamp. Returns it and the drop count."""
    latest: dict[tuple[str, int], Answer] = {}
    dropped = 0
    for a in answers:
        k = (a.reader, a.item)
        if k in latest:
            dropped += 1
            if a.timestamp < latest[k].timestamp:
                continue
        latest[k] = a
    return sorted(latest.values(), key=lambda a: (a.reader, a.item)), dropped


def binomial_summary(correct: int, n: int) -> dict[str, float]:
    """Exact two-sided binomial test of correct/n against 0.5, with a 95% Clopper-Pearson CI."""
    from scipy.stats import binomtest

    result = binomtest(correct, n, p=0.5, alternative="two-sided")
    ci = result.proportion_ci(confidence_level=0.95, method="exact")
    return {"p_value": float(result.pvalue), "ci_low": float(ci.low), "ci_high": float(ci.high)}


def _mean(values: Sequence[int]) -> float | None:
    return float(np.mean(values)) if values else None


def group_scores(rows: Sequence[tuple[Answer, str]]) -> dict[str, Any]:
    """Scores of (answer, truth) pairs: positive class = synthetic."""
    n = len(rows)
    correct = sum(a.answer == truth for a, truth in rows)
    tp = sum(a.answer == truth == "synthetic" for a, truth in rows)
    tn = sum(a.answer == truth == "real" for a, truth in rows)
    n_synthetic = sum(truth == "synthetic" for _, truth in rows)
    n_real = n - n_synthetic
    out: dict[str, Any] = {
        "n": n,
        "correct": int(correct),
        "n_synthetic": n_synthetic,
        "n_real": n_real,
        "accuracy": correct / n if n else None,
        "sensitivity": tp / n_synthetic if n_synthetic else None,
        "specificity": tn / n_real if n_real else None,
        "p_value": None,
        "ci_low": None,
        "ci_high": None,
        "confidence_right": _mean(
            [a.confidence for a, t in rows if a.answer == t and a.confidence is not None]
        ),
        "confidence_wrong": _mean(
            [a.confidence for a, t in rows if a.answer != t and a.confidence is not None]
        ),
    }
    if n:
        out.update(binomial_summary(int(correct), n))
    return out


def score(
    kit_dir: str | os.PathLike, answer_files: Sequence[str | os.PathLike], *, log: Log = print
) -> dict[str, Any]:
    """Scores the answers against the kit's key; writes scores.json and scores.md there."""
    if not answer_files:
        raise ReaderStudyError("no --answers given: name at least one answers CSV")
    kit_dir = epath.Path(kit_dir)
    key = load_key(kit_dir)
    truth = {int(i["item"]): i["truth"] for i in key["items"]}
    resolution = {int(i["item"]): int(i["resolution"]) for i in key["items"]}
    answers: list[Answer] = []
    for path in answer_files:
        answers += read_answers(path, key)
    answers, dropped = _deduplicate(answers)
    if not answers:
        raise ReaderStudyError("the answers files hold no answers")
    if dropped:
        log(f"note: {dropped} repeated answers (same reader and item): kept the latest of each")

    pairs = [(a, truth[a.item]) for a in answers]
    readers = sorted({a.reader for a in answers})
    resolutions = sorted({resolution[a.item] for a in answers})
    by_res = lambda rows, r: [(a, t) for a, t in rows if resolution[a.item] == r]
    kit_per_res = {r: sum(v == r for v in resolution.values()) for r in resolutions}
    per_reader = {}
    for reader in readers:
        rows = [(a, t) for a, t in pairs if a.reader == reader]
        entry = group_scores(rows)
        entry["answered"] = len(rows)
        entry["kit_items"] = len(truth)
        entry["per_resolution"] = {str(r): group_scores(by_res(rows, r)) for r in resolutions}
        per_reader[reader] = entry
        if len(rows) < len(truth):
            log(f"note: {reader} answered {len(rows)} of {len(truth)} items: scored on those")
    result = {
        "kit_id": key["kit_id"],
        "positive_class": "synthetic",
        "test": "exact two-sided binomial test of accuracy against 0.5; 95% Clopper-Pearson",
        "answer_files": [os.path.basename(os.fspath(p)) for p in answer_files],
        "kit_items": len(truth),
        "kit_items_per_resolution": {str(r): k for r, k in kit_per_res.items()},
        "repeated_answers_dropped": dropped,
        "overall": group_scores(pairs),
        "per_resolution": {str(r): group_scores(by_res(pairs, r)) for r in resolutions},
        "per_reader": per_reader,
    }
    (kit_dir / SCORES_JSON).write_text(json.dumps(result, indent=2) + "\n")
    (kit_dir / SCORES_MD).write_text(scores_markdown(result))
    return result


def _table_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [("all readers", result["overall"])]
    multi_res = len(result["per_resolution"]) > 1
    if multi_res:
        rows += [(f"all readers @ {r}x{r}", s) for r, s in result["per_resolution"].items()]
    for reader, s in result["per_reader"].items():
        label = reader
        if s["answered"] < s["kit_items"]:
            label += f" ({s['answered']}/{s['kit_items']} answered)"
        rows.append((label, s))
        if multi_res:
            rows += [(f"{reader} @ {r}x{r}", v) for r, v in s["per_resolution"].items() if v["n"]]
    return rows


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


_HEADER = (
    "group",
    "n",
    "correct",
    "accuracy",
    "95% CI",
    "p (vs 0.5)",
    "sensitivity",
    "specificity",
    "conf right",
    "conf wrong",
)


def _cells(label: str, s: dict[str, Any]) -> tuple[str, ...]:
    ci = "-" if s["ci_low"] is None else f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
    return (
        label,
        str(s["n"]),
        str(s["correct"]),
        _fmt(s["accuracy"]),
        ci,
        _fmt_p(s["p_value"]),
        _fmt(s["sensitivity"]),
        _fmt(s["specificity"]),
        _fmt(s["confidence_right"], 2),
        _fmt(s["confidence_wrong"], 2),
    )


def scores_table(result: dict[str, Any]) -> str:
    """The scores as an aligned plain-text table."""
    rows = [_HEADER] + [_cells(label, s) for label, s in _table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    align = lambda i, cell: cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
    lines = ["  ".join(align(i, cell) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def scores_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Reader study, kit {result['kit_id']}",
        "",
        f"{result['kit_items']} items; answers from {', '.join(result['answer_files'])}. "
        "Positive class: synthetic (sensitivity = synthetic called synthetic, specificity = "
        "real called real). p: exact two-sided binomial test of the accuracy against chance "
        "(0.5); 95% Clopper-Pearson interval. Pooled rows treat every answer as independent, "
        "although readers see the same images. conf: mean confidence (1-5) of right and "
        "wrong answers.",
        "",
        "| " + " | ".join(_HEADER) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(_HEADER) - 1)) + "|",
    ]
    for label, s in _table_rows(result):
        cells = [c.replace("|", "\\|") for c in _cells(label, s)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
