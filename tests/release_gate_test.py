"""The release gate on the smoke run: generators that copy are refused, an honest one is
released shuffled, with its close images replaced and nothing of the machine in its card.

The copying generators are injected in place of the trained one (`synthesize.draw_images`),
so the stage's own code audits them: one returns exact training images for 2% of its
images, one a near copy (new contrast, brightness and noise) of a training image for every
image.
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from conftest import REPO, _summary

from synthjax.data.loader import load_source


def _workdir_from(smoke_workdir, tmp_path, name):
    workdir = tmp_path / name
    workdir.mkdir()
    for part in ("config.json", "prepare", "classifier_real", "gan"):
        copy = shutil.copytree if (smoke_workdir / part).is_dir() else shutil.copy
        copy(smoke_workdir / part, workdir / part)
    return workdir


def _train_images(smoke_workdir):
    prepared = _summary(smoke_workdir, "prepare")
    train = load_source(prepared["dataset_dir"], "train")
    kept = np.load(smoke_workdir / "prepare" / "subset.npz")["indices_train"]
    return jnp.asarray(np.stack([train[int(i)]["image"] for i in kept]))


def _synthesize(workdir, monkeypatch, generate=None, **privacy):
    from synthjax import experiment, synthesize
    from synthjax.core.config_files import load

    if generate is not None:
        monkeypatch.setattr(synthesize, "draw_images", generate)
    config = load(str(REPO / "configs/quickstart.py:smoke"))
    config.stages = ("synthesize",)
    config.compilation_cache = ""
    for field, value in privacy.items():
        config.privacy[field] = value
    experiment.run(config, str(workdir))
    return json.loads((workdir / "synthetic" / "DATASET_CARD.json").read_text())


def test_two_percent_exact_copies_are_refused(smoke_run, tmp_path, monkeypatch):
    from synthjax import synthesize

    train = _train_images(smoke_run[0])
    honest = synthesize.draw_images

    def generate(g, key, idx, y, **kw):
        images = honest(g, key, idx, y, **kw)
        copy = (idx % 50 == 7)[:, None, None, None]
        return jnp.where(copy, train[idx % len(train)], images)

    workdir = _workdir_from(smoke_run[0], tmp_path, "two_percent")
    card = _synthesize(workdir, monkeypatch, generate)
    assert card["releasable"] is False and card["privacy"]["audit_passed"] is False
    pixels = card["privacy"]["spaces"]["pixels_16"]
    assert pixels["copies"] >= 1 and pixels["heldout_below_floor"] == 0
    assert any("COPIES" in r for r in card["privacy"]["reasons"])
    assert card["release"]["replaced"] == card["release"]["dropped"] == 0
    assert _summary(workdir, "synthesize")["releasable"] is False


def test_near_copies_of_every_image_are_refused(smoke_run, tmp_path, monkeypatch):
    train = _train_images(smoke_run[0])

    def generate(g, key, idx, y, **_):
        image = train[idx % len(train)].astype(jnp.float32)
        noise = jax.vmap(lambda i: jax.random.normal(jax.random.key(i), image.shape[1:]))(idx)
        near = (image - 128.0) * 0.85 + 128.0 + 12.0 + 4.0 * noise
        return jnp.clip(jnp.round(near), 0, 255).astype(jnp.uint8)

    workdir = _workdir_from(smoke_run[0], tmp_path, "near_all")
    card = _synthesize(workdir, monkeypatch, generate)
    assert card["releasable"] is False
    pixels = card["privacy"]["spaces"]["pixels_16"]
    # Nearer their originals than any new patient, beyond the copy floor for some (it sits
    # at the median near copy): memorization.
    assert pixels["close_rate"] > 0.9 and pixels["seen_share"] > 0.95
    assert pixels["seen_p_value"] < 1e-6 and "MEMORIZES" in " ".join(card["privacy"]["reasons"])
    # An override releases it, and the card says who decided and why.
    workdir = _workdir_from(smoke_run[0], tmp_path, "override")
    card = _synthesize(workdir, monkeypatch, generate, release_override="test: a known copy")
    assert card["releasable"] is True and card["privacy"]["audit_passed"] is False
    assert card["privacy"]["override"] == {"reason": "test: a known copy"}


def test_the_release_is_shuffled_audited_in_full_and_names_no_path(smoke_run):
    workdir = smoke_run[0]
    card = json.loads((workdir / "synthetic" / "DATASET_CARD.json").read_text())
    prepared = _summary(workdir, "prepare")
    audited = card["privacy"]["audited_synthetic"]
    assert audited == sum(prepared["images"].values())  # every image, no sample
    assert (
        card["counts"]["train"] + card["release"]["per_split"]["train"]["dropped"]
        == (prepared["images"]["train"])
    )
    train = load_source(workdir / "synthetic", "train")
    real = load_source(prepared["dataset_dir"], "train")
    subset = np.load(workdir / "prepare" / "subset.npz")["indices_train"]
    kept = real.labels[subset]
    if not card["release"]["per_split"]["train"]["dropped"]:
        # The same label vectors, not in the real records' order.
        key = lambda y: sorted(map(bytes, np.asarray(y, np.float32)))
        assert key(train.labels) == key(kept)
        assert not np.array_equal(train.labels, kept)
    text = json.dumps(card)
    assert str(workdir) not in text and "/tmp" not in text and "/home" not in text
    assert not (workdir / "synthesize" / "draft").exists()
    assert "order" in card["release"] and "secret" in card["release"]["order"]
