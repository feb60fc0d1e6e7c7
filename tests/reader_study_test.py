"""The reader-study kit: export (page and key), scoring, and the page driven in Chromium.

The fake workdirs hold real test images that are dark (pixel values below 128) and
synthetic test images that are bright, so the truth of every item can be read from its
pixels alone and checked against the key. Real records left out of the kept subset are
black: they must never reach the kit.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from etils import epath
from PIL import Image
from scipy.stats import binomtest

from synthjax import reader_study
from synthjax.data import shards
from synthjax.reader_study import kit

NOT_KEPT_VALUE = 0


def _write_dataset(dataset_dir: Path, name: str, images: list[np.ndarray], ids: list[str]) -> None:
    directory = epath.Path(dataset_dir)
    directory.mkdir(parents=True, exist_ok=True)
    features = shards.image_features(images[0].shape, 2)
    records = [
        {"image": image, "labels": np.array([i % 2, 0], np.float32), "id": ident}
        for i, (image, ident) in enumerate(zip(images, ids, strict=True))
    ]
    shards.write_shard(shards.shard_path(directory, name, "test", 0, 1), features, records)
    shards.write_metadata(
        directory,
        name=name,
        features=features,
        shard_lengths={"test": [len(records)]},
        label_names=["A", "B"],
        description="reader-study test data",
    )


def make_workdir(
    root: Path,
    name: str,
    *,
    resolution: int,
    channels: int = 1,
    real_total: int = 12,
    kept: int = 9,
    synthetic: int = 9,
    with_synthetic: bool = True,
) -> Path:
    """A workdir with `prepare` done (kept real test subset) and a synthetic test split."""
    workdir = root / name
    shape = (resolution, resolution, channels)
    kept_indices = np.arange(real_total)[real_total - kept :]  # the first ones are left out
    real_images = [
        np.full(shape, 10 + 5 * i if i in kept_indices else NOT_KEPT_VALUE, np.uint8)
        for i in range(real_total)
    ]
    real_dir = root / f"{name}_real_data"
    _write_dataset(
        real_dir, "fakecxr", real_images, [f"patient{i:05d}/study1" for i in range(real_total)]
    )
    (workdir / "prepare").mkdir(parents=True)
    (workdir / "prepare" / "summary.json").write_text(
        json.dumps({"stage": "prepare", "dataset_dir": str(real_dir), "label_names": ["A", "B"]})
    )
    with open(workdir / "prepare" / "subset.npz", "wb") as f:
        np.savez(f, combos=np.zeros((1, 2), np.uint8), indices_test=kept_indices)
    (workdir / "config.json").write_text(json.dumps({"dataset": {"resolution": resolution}}))
    if with_synthetic:
        synthetic_images = [np.full(shape, 150 + 5 * i, np.uint8) for i in range(synthetic)]
        _write_dataset(
            workdir / "synthetic",
            "synthetic",
            synthetic_images,
            [f"synthetic-test-{i:07d}" for i in range(synthetic)],
        )
    return workdir


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    return (
        make_workdir(root, "cxr8", resolution=8, channels=1),
        make_workdir(root, "cxr16", resolution=16, channels=3),
    )


def page_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="kit-data">(.*?)</script>', html, re.S)
    assert match, "the page has no embedded kit data"
    return json.loads(match.group(1))


def decode(src: str) -> tuple[np.ndarray, bytes]:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    png = base64.b64decode(src[len(prefix) :])
    return np.asarray(Image.open(io.BytesIO(png))), png


def png_chunk_types(png: bytes) -> list[str]:
    types, pos = [], 8
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        types.append(png[pos + 4 : pos + 8].decode("ascii"))
        pos += 12 + length
    return types


def truth_from_pixels(pixels: np.ndarray) -> str:
    assert pixels.min() != NOT_KEPT_VALUE or pixels.max() != NOT_KEPT_VALUE, "a left-out image"
    return "real" if pixels.mean() < 128 else "synthetic"


def read_kit(kit_dir: Path) -> tuple[str, dict, dict]:
    html = (kit_dir / "index.html").read_text(encoding="utf-8")
    key = json.loads((kit_dir / "key.json").read_text())
    return html, page_data(html), key


# ----------------------------------------------------------------------------------------
# export


def test_export_writes_a_blind_self_contained_kit(workdirs, tmp_path):
    kit_dir = reader_study.export(workdirs, 6, seed=3, out=tmp_path / "kit", log=lambda m: None)
    html, data, key = read_kit(kit_dir)
    assert (kit_dir / "README.txt").exists()
    readme = (kit_dir / "README.txt").read_text()
    assert "ONLY this file" in readme and "study lead" in readme and "inside the hospital" in readme

    # n per workdir, half real and half synthetic; both resolutions present.
    items = key["items"]
    assert len(items) == len(data["items"]) == 12
    assert key["kit_id"] == data["kit"] and key["seed"] == 3
    for name in ("cxr8", "cxr16"):
        mine = [i for i in items if i["workdir"] == name]
        assert sorted(i["truth"] for i in mine) == ["real"] * 3 + ["synthetic"] * 3
    assert {i["resolution"] for i in items} == {8, 16}

    # Page items carry only a running number, the resolution, a display size and the image.
    assert [it["id"] for it in data["items"]] == [i["item"] for i in items] == list(range(1, 13))
    for page_item, key_item in zip(data["items"], items, strict=True):
        assert set(page_item) == {"id", "res", "px", "src"}
        assert page_item["res"] == key_item["resolution"]
        assert page_item["px"] >= 256
        pixels, png = decode(page_item["src"])
        assert pixels.shape[:2] == (key_item["resolution"],) * 2
        assert pixels.ndim == (2 if key_item["resolution"] == 8 else 3)  # L vs RGB
        assert truth_from_pixels(pixels) == key_item["truth"]  # the key is right
        assert png_chunk_types(png) == ["IHDR", "IDAT", "IEND"]  # no text or other metadata

    # Outside its embedded data the page is the same for every kit: no item-specific hints.
    empty = reader_study.render_page(data["kit"], [])
    strip = lambda page: re.sub(r'(id="kit-data">).*?(</script>)', r"\1\2", page, flags=re.S)
    assert strip(html) == strip(empty)

    # Self-contained: nothing to fetch.
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"<link\b", html, re.I)
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    assert "@import" not in style and "url(" not in style
    assert not re.search(r"\bfetch\(|XMLHttpRequest|WebSocket|\bimport\(", html)
    assert not re.search(r"""\b(src|href)\s*=\s*["'](?!data:)""", html, re.I)

    # Nothing identifying: no patient ids, no paths, in the page or the key.
    for text in (html, (kit_dir / "key.json").read_text()):
        assert "patient" not in text and str(tmp_path.parent) not in text
        assert "_real_data" not in text and "synthetic-test-" not in text
    assert {i["workdir"] for i in items} == {"cxr8", "cxr16"}


def test_export_order_is_seeded(workdirs, tmp_path):
    quiet = lambda m: None
    a = reader_study.export(workdirs, 6, seed=1, out=tmp_path / "a", log=quiet)
    b = reader_study.export(workdirs, 6, seed=1, out=tmp_path / "b", log=quiet)
    c = reader_study.export(workdirs, 6, seed=2, out=tmp_path / "c", log=quiet)
    page = lambda kit: (kit / "index.html").read_text()
    assert page(a) == page(b)
    srcs = lambda kit: [it["src"] for it in page_data(page(kit))["items"]]
    assert srcs(a) != srcs(c)
    assert read_kit(a)[2]["kit_id"] != read_kit(c)[2]["kit_id"]


def test_export_takes_what_a_short_split_has(tmp_path):
    workdir = make_workdir(tmp_path, "small", resolution=8, kept=2, synthetic=5)
    notes = []
    kit_dir = reader_study.export([workdir], 8, log=notes.append)
    assert kit_dir == epath.Path(workdir / "reader_study_PRIVATE")
    _, data, key = read_kit(Path(kit_dir))
    truths = [i["truth"] for i in key["items"]]
    assert truths.count("real") == 2 and truths.count("synthetic") == 4
    assert any("only 2 real" in n for n in notes)
    assert key["workdirs"][0]["real"] == 2 and key["workdirs"][0]["real_available"] == 2
    assert len(data["items"]) == 6


def test_export_errors_say_what_to_do(tmp_path, workdirs, capsys):
    bare = make_workdir(tmp_path, "nosynth", resolution=8, with_synthetic=False)
    with pytest.raises(reader_study.ReaderStudyError, match="run the synthesize stage first"):
        reader_study.export([bare], 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(reader_study.ReaderStudyError, match="run the prepare stage first"):
        reader_study.export([tmp_path / "empty"], 4)
    with pytest.raises(reader_study.ReaderStudyError, match="even"):
        reader_study.export(workdirs, 5)
    out = tmp_path / "kit"
    assert (
        reader_study.main(["export", "--workdir", str(workdirs[0]), "--n", "4", "--out", str(out)])
        == 0
    )
    assert (
        reader_study.main(["export", "--workdir", str(workdirs[0]), "--n", "4", "--out", str(out)])
        == 2
    )
    assert "--force" in capsys.readouterr().err
    assert (
        reader_study.main(
            ["export", "--workdir", str(workdirs[0]), "--n", "4", "--out", str(out), "--force"]
        )
        == 0
    )


def test_help(capsys):
    for command in ("export", "score"):
        with pytest.raises(SystemExit) as exit_info:
            reader_study.main([command, "--help"])
        assert exit_info.value.code == 0
        assert "--workdir" in capsys.readouterr().out


def test_png_channels():
    gray = np.asarray(Image.open(io.BytesIO(reader_study.png_bytes(np.zeros((4, 4, 1), np.uint8)))))
    rgb = np.asarray(Image.open(io.BytesIO(reader_study.png_bytes(np.zeros((4, 4, 3), np.uint8)))))
    ct = np.zeros((4, 4, 9), np.uint8)
    ct[..., 3:6] = [7, 8, 9]  # the middle slice's three windows
    shown = np.asarray(Image.open(io.BytesIO(reader_study.png_bytes(ct))))
    assert gray.shape == (4, 4) and rgb.shape == (4, 4, 3)
    np.testing.assert_array_equal(shown[0, 0], [7, 8, 9])
    assert reader_study.display_size(8, 8) == 512 and reader_study.display_size(256, 256) == 512
    assert (
        reader_study.display_size(224, 224) == 448 and reader_study.display_size(1024, 1024) == 1024
    )


# ----------------------------------------------------------------------------------------
# score

# item: (truth, resolution)
HAND_KEY = {
    1: ("synthetic", 8), 2: ("real", 8), 3: ("synthetic", 8), 4: ("real", 8),
    5: ("real", 16), 6: ("synthetic", 16), 7: ("synthetic", 16), 8: ("real", 16),
}  # fmt: skip
# (reader, item, answer, confidence)
HAND_ANSWERS = [
    ("alice", 1, "synthetic", 5), ("alice", 2, "real", 4), ("alice", 3, "real", 2),
    ("alice", 4, "real", 3), ("alice", 5, "synthetic", 1), ("alice", 6, "synthetic", 5),
    ("alice", 7, "synthetic", 4), ("alice", 8, "real", 3),
    ("bob", 1, "real", 2), ("bob", 2, "real", 3), ("bob", 3, "synthetic", 4),
]  # fmt: skip


def write_key(kit_dir: Path, kit_id: str = "abc123def456") -> None:
    kit_dir.mkdir(parents=True, exist_ok=True)
    items = [
        {"item": i, "truth": t, "resolution": r, "workdir": f"run{r}"}
        for i, (t, r) in HAND_KEY.items()
    ]
    (kit_dir / "key.json").write_text(json.dumps({"kit_id": kit_id, "seed": 0, "items": items}))


def write_answers(path: Path, rows, kit: str | None = "abc123def456") -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*reader_study.CSV_COLUMNS, *(["kit"] if kit else [])])
        for n, (reader, item, answer, confidence) in enumerate(rows):
            stamp = f"2024-05-01T10:{n:02d}:00.000Z"
            w.writerow([reader, item, answer, confidence, 1000 + n, stamp, *([kit] if kit else [])])
    return path


def test_score_against_hand_computed_values(tmp_path, capsys):
    workdir = tmp_path / "run"
    kit_dir = workdir / "reader_study_PRIVATE"
    write_key(kit_dir)
    alice = write_answers(tmp_path / "alice.csv", HAND_ANSWERS[:8])
    bob = write_answers(tmp_path / "bob.csv", HAND_ANSWERS[8:], kit=None)  # no kit column
    code = reader_study.main(
        ["score", "--workdir", str(workdir), "--answers", str(alice), "--answers", str(bob)]
    )
    assert code == 0
    out, err = capsys.readouterr()
    assert "bob answered 3 of 8" in err and "alice" in out and "accuracy" in out
    result = json.loads((kit_dir / "scores.json").read_text())
    assert (kit_dir / "scores.md").read_text().startswith("# Reader study")

    def check(s, n, correct, sens, spec, conf_right=None, conf_wrong=None):
        assert (s["n"], s["correct"]) == (n, correct)
        assert s["accuracy"] == pytest.approx(correct / n)
        assert s["sensitivity"] == pytest.approx(sens)
        assert s["specificity"] == pytest.approx(spec)
        expected = binomtest(correct, n, 0.5)
        assert s["p_value"] == pytest.approx(expected.pvalue)
        ci = expected.proportion_ci(0.95, method="exact")
        assert (s["ci_low"], s["ci_high"]) == pytest.approx((ci.low, ci.high))
        if conf_right is not None:
            assert s["confidence_right"] == pytest.approx(conf_right)
            assert s["confidence_wrong"] == pytest.approx(conf_wrong)

    check(result["overall"], 11, 8, 4 / 6, 4 / 5)
    check(result["per_resolution"]["8"], 7, 5, 2 / 4, 3 / 3)
    check(result["per_resolution"]["16"], 4, 3, 2 / 2, 1 / 2)
    alice_s, bob_s = result["per_reader"]["alice"], result["per_reader"]["bob"]
    check(alice_s, 8, 6, 3 / 4, 3 / 4, conf_right=4.0, conf_wrong=1.5)
    check(alice_s["per_resolution"]["8"], 4, 3, 1 / 2, 1.0)
    check(alice_s["per_resolution"]["16"], 4, 3, 1.0, 1 / 2)
    check(bob_s, 3, 2, 1 / 2, 1.0, conf_right=3.5, conf_wrong=2.0)
    assert bob_s["answered"] == 3 and bob_s["kit_items"] == 8
    assert bob_s["per_resolution"]["16"]["n"] == 0


def test_binomial_known_case():
    s = reader_study.binomial_summary(9, 10)
    assert s["p_value"] == pytest.approx(0.021484375, abs=1e-12)
    ci = binomtest(9, 10).proportion_ci(0.95, method="exact")
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert 0.55 < s["ci_low"] < 0.56 and 0.997 < s["ci_high"] < 0.998


def test_score_refuses_answers_from_elsewhere(tmp_path):
    kit_dir = tmp_path / "kit"
    write_key(kit_dir)
    other = write_answers(tmp_path / "other.csv", HAND_ANSWERS[:2], kit="ffffffffffff")
    with pytest.raises(reader_study.ReaderStudyError, match="for kit ffffffffffff"):
        reader_study.score(kit_dir, [other])
    unknown = write_answers(tmp_path / "unknown.csv", [("carol", 99, "real", 3)])
    with pytest.raises(reader_study.ReaderStudyError, match="item '99' is not in kit"):
        reader_study.score(kit_dir, [unknown])
    bad = write_answers(tmp_path / "bad.csv", [("carol", 1, "maybe", 3)])
    with pytest.raises(reader_study.ReaderStudyError, match="not real or synthetic"):
        reader_study.score(kit_dir, [bad])
    (tmp_path / "wrong.csv").write_text("name,guess\nx,1\n")
    with pytest.raises(reader_study.ReaderStudyError, match="missing columns"):
        reader_study.score(kit_dir, [tmp_path / "wrong.csv"])
    with pytest.raises(reader_study.ReaderStudyError, match="no answer key"):
        reader_study.score(tmp_path / "nowhere", [other])
    # The same answers twice (e.g. a download midway and one at the end): counted once.
    first = write_answers(tmp_path / "first.csv", HAND_ANSWERS[:3])
    notes = []
    result = reader_study.score(kit_dir, [first, first], log=notes.append)
    assert result["overall"]["n"] == 3 and result["repeated_answers_dropped"] == 3
    assert any("repeated" in n for n in notes)


# ----------------------------------------------------------------------------------------
# the page in headless Chromium


def _browser():
    """(webdriver module pieces, chromium path, chromedriver path), or skip saying why."""
    chromium = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "the page test needs Chromium and its driver: apt-get install chromium chromium-driver"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("the page test needs selenium: pip install selenium (in the test extra)")
    return webdriver, Service, chromium, driver


def _wait(condition, timeout: float = 60.0, what: str = "condition", explain=None):
    # Generous: a loaded 2-core machine once took over 10 s to reload the page.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f"; {explain()}" if explain else ""))


# What the page shows and holds, for a failure message: which screens are visible, the
# page's state, and the raw saved state in localStorage.
_PAGE_DIAGNOSIS = """
const ids = ["start", "viewer", "done", "storage-warning"];
const shown = (i) => (document.getElementById(i) ? !document.getElementById(i).hidden : null);
const stored = (k) => [k, localStorage.getItem(k).slice(0, 300)];
return {
  ready: document.readyState,
  url: location.href,
  visible: Object.fromEntries(ids.map((i) => [i, shown(i)])),
  state: window.readerStudy ? window.readerStudy.state() : null,
  stored: Object.fromEntries(Object.keys(localStorage).map(stored)),
};
"""


def test_page_in_chromium(workdirs, tmp_path):
    webdriver, Service, chromium, chromedriver = _browser()
    from selenium.webdriver.common.by import By

    kit_dir = Path(reader_study.export(workdirs, 4, seed=5, out=tmp_path / "kit", log=print))
    key = json.loads((kit_dir / "key.json").read_text())
    truth = {i["item"]: i["truth"] for i in key["items"]}
    n = len(truth)
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1100,900"):  # fmt: skip
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
        },
    )
    browser = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        browser.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        browser.get(kit_dir.joinpath("index.html").as_uri())
        by_id = lambda element_id: browser.find_element(By.ID, element_id)
        assert by_id("start").is_displayed() and not by_id("viewer").is_displayed()

        reader = 'Dr. Tester, "R1"'  # a comma and quotes: the CSV must quote them
        by_id("reader-input").send_keys(reader)
        by_id("start-button").click()
        _wait(lambda: by_id("viewer").is_displayed(), what="the first item")

        # Every third item answered wrongly; confidence cycles 1..5; odd items by keyboard.
        expected = {}
        for item in range(1, n + 1):
            right = truth[item]
            answer = right if item % 3 else ("real" if right == "synthetic" else "synthetic")
            confidence = (item - 1) % 5 + 1
            expected[item] = (answer, confidence)
            assert by_id("progress-text").text == f"{item} / {n}"
            assert by_id("item-label").text == f"Item {item}"
            if item % 2:
                body = browser.find_element(By.TAG_NAME, "body")
                body.send_keys(answer[0] + str(confidence))
            else:
                by_id(f"answer-{answer}").click()
                browser.find_element(By.CSS_SELECTOR, f'[data-confidence="{confidence}"]').click()
            if item == 3:
                browser.save_screenshot(str(tmp_path / "reader_page.png"))
            by_id("next").click()
            if item == n // 2:  # a reload midway keeps every answer
                browser.refresh()
                _wait(
                    lambda: by_id("viewer").is_displayed(),
                    what="the page after a reload",
                    explain=lambda: browser.execute_script(_PAGE_DIAGNOSIS),
                )
                state = browser.execute_script("return window.readerStudy.state()")
                assert state["reader"] == reader and len(state["answers"]) == item
                assert by_id("progress-text").text == f"{item + 1} / {n}"

        _wait(lambda: by_id("done").is_displayed(), what="the end screen")
        page_csv = browser.execute_script("return window.readerStudy.csv()")
        by_id("download-end").click()
        found = _wait(
            lambda: [p for p in downloads.glob("*.csv") if p.stat().st_size > 0],
            what="the downloaded CSV",
        )
        browser.save_screenshot(str(tmp_path / "reader_page_done.png"))
    finally:
        browser.quit()

    assert len(found) == 1 and found[0].name == f"reader_study_{key['kit_id']}_Dr._Tester_R1.csv"
    downloaded = found[0].read_bytes().decode("utf-8")
    assert downloaded == page_csv
    rows = list(csv.DictReader(io.StringIO(downloaded)))
    assert list(rows[0]) == [*reader_study.CSV_COLUMNS, "kit"]
    assert len(rows) == n
    for row in rows:
        assert row["reader"] == reader and row["kit"] == key["kit_id"]
        assert (row["answer"], int(row["confidence"])) == expected[int(row["item"])]
        assert int(row["time_ms"]) >= 0 and row["timestamp"].endswith("Z")

    result = reader_study.score(kit_dir, [found[0]], log=print)
    wrong = [i for i in range(1, n + 1) if i % 3 == 0]
    assert result["overall"]["n"] == n
    assert result["overall"]["correct"] == n - len(wrong)
    assert set(result["per_resolution"]) == {"8", "16"}
    assert result["per_reader"][reader]["answered"] == n
    assert (tmp_path / "reader_page.png").stat().st_size > 0


def test_real_images_come_from_as_many_patients_as_there_are():
    patients = np.repeat(np.array(["p1", "p2", "p3", "p4"]), [10, 5, 1, 4])
    for seed in range(5):
        rng = np.random.default_rng(seed)
        pick = kit.spread_over_patients(patients, 4, rng)
        assert sorted(patients[pick]) == ["p1", "p2", "p3", "p4"]  # one each
        pick = kit.spread_over_patients(patients, 7, np.random.default_rng(seed))
        counts = {p: int((patients[pick] == p).sum()) for p in ("p1", "p2", "p3", "p4")}
        assert counts["p3"] == 1 and sorted(counts.values()) == [1, 2, 2, 2]
        assert len(set(pick)) == 7 and list(pick) == sorted(pick)
    again = kit.spread_over_patients(patients, 7, np.random.default_rng(0))
    assert list(again) == list(kit.spread_over_patients(patients, 7, np.random.default_rng(0)))
    assert len(kit.spread_over_patients(patients, 20, np.random.default_rng(0))) == 20
