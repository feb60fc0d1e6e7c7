r"""The reader-study kit: radiologists are shown real and synthetic images and say which is which.

  python -m synthjax.reader_study export --workdir runs/cxr64 --workdir runs/cxr256 --n 100
  python -m synthjax.reader_study score --workdir runs/cxr64 --answers alice.csv --answers bob.csv

`export` draws, from each workdir, n/2 real held-out images (the kept real test split) and
n/2 synthetic ones (the synthetic test split), shuffles them all in a seeded order and writes
a kit directory (default `<first workdir>/reader_study_PRIVATE/`: it holds real images,
which a blinded study cannot mark on the image, so its name says so):

  index.html   one self-contained page (images inline, no network, works from file://); it
               asks for the reader's name, shows one image at a time, records real/synthetic,
               a confidence 1-5 and the time spent, keeps progress in the browser's
               localStorage and saves the answers as a CSV:
               `reader,item,answer,confidence,time_ms,timestamp,kit`
  key.json     the answer key: per item its truth, resolution and workdir name
  README.txt   how to run the study

The page carries no hint of the truth: items are numbers in a random order, images are PNGs
written afresh from their pixels (no metadata), and nothing in it names a patient or a file.
The key stays with the study lead; the kit holds real patient images, so it stays wherever
the data may be.

`score` joins the readers' CSVs to the key and reports accuracy, sensitivity (synthetic
called synthetic), specificity (real called real), an exact two-sided binomial test of the
accuracy against chance (0.5) with its 95% Clopper-Pearson interval, and the mean confidence
of right and wrong answers: overall, per resolution, per reader and per reader x resolution.
It prints a table and writes `scores.json` and `scores.md` into the kit directory.

The package: `kit.py` (export), `scores.py` (scoring), `cli.py` (the command line); the
page is `synthjax/reader_study_page.html`. It needs no JAX: it reads the shards with the
dataset loader only.
"""

from synthjax.reader_study.cli import main
from synthjax.reader_study.kit import (
    KEY_FILE,
    KIT_DIRNAME,
    PAGE_FILE,
    README_FILE,
    SCORES_JSON,
    SCORES_MD,
    ReaderStudyError,
    display_size,
    export,
    load_key,
    png_bytes,
    render_page,
)
from synthjax.reader_study.scores import (
    ANSWERS,
    CONFIDENCES,
    CSV_COLUMNS,
    KIT_COLUMN,
    Answer,
    binomial_summary,
    group_scores,
    read_answers,
    score,
    scores_markdown,
    scores_table,
)

__all__ = [
    "ANSWERS",
    "CONFIDENCES",
    "CSV_COLUMNS",
    "KEY_FILE",
    "KIT_COLUMN",
    "KIT_DIRNAME",
    "PAGE_FILE",
    "README_FILE",
    "SCORES_JSON",
    "SCORES_MD",
    "Answer",
    "ReaderStudyError",
    "binomial_summary",
    "display_size",
    "export",
    "group_scores",
    "load_key",
    "main",
    "png_bytes",
    "read_answers",
    "render_page",
    "score",
    "scores_markdown",
    "scores_table",
]
