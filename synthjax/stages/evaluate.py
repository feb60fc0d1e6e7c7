"""Stage `evaluate`: how useful, how faithful and how distinguishable the release is.

- Utility: the test scores both classifier stages saved (TRTR: trained on real; TSTR:
  trained on synthetic; both on the same real test images) give per-label ROC-AUC and
  AUPRC with bootstrap 95% intervals, the paired TRTR - TSTR gap, DeLong's paired test per
  label, and the same per label combination (one-vs-rest, `utility.combination_*`) where a
  combination has `evaluate.min_combination_images` test images. AUCs below 0.5 are
  reported as they are; labels without `evaluate.min_positives` positive and negative test
  images are listed, not averaged. Intervals and tests are at `evaluate.interval_level`:
  patient (resampling the test patients, the clustered DeLong test) by default, with the
  image-level ones beside them (`*_image_level`) for comparison with the study.
- Fidelity: Fréchet distance, KID (with a bootstrap interval) and precision / recall /
  density / coverage between the real and the synthetic test images in the domain features
  (the real-trained classifier's), overall and per combination, next to the same numbers
  for real validation vs real test images (what a perfect generator would score here); in
  Inception features too when `evaluate.inception_weights` is given. The overall FDs are at
  `evaluate.fd_num_images` images per side (a seeded choice), or at what the smallest side
  has, said so in `fd_note`; per combination, at the combination's own counts.
- Label fidelity: the real-trained classifier's per-label AUROC on the synthetic test
  images against the label vectors they were generated from, with a bootstrap interval
  (`label_fidelity.py`): 0.5 = the labels left no trace in the images.
- Discrimination: the discrimination test (`discrimination.py`) on real held-out vs
  synthetic images, at each resolution.
- Privacy: the memorization audit that `synthesize` recorded in DATASET_CARD.json.
- Read with care: every DeLong p also gets Holm's adjustment over all of this report's
  DeLong tests (labels and combinations, one family: `multiplicity.py`), and the per-label
  AUROC also appears in the study's convention, AUC < 0.5 flipped (`study_auroc.py`), for
  comparison with its published figures only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from absl import logging

from synthjax.core.workdir import Run, read_json
from synthjax.data.loader import load_source
from synthjax.data.prepared import prepared
from synthjax.eval import auc, discrimination, fidelity, label_fidelity, utility
from synthjax.eval.grids import label_combination_name
from synthjax.eval.multiplicity import add_holm_adjusted
from synthjax.eval.privacy import seeded_subset
from synthjax.eval.study_auroc import add_study_style_auroc
from synthjax.eval.utility import evaluated_labels, load_predictions, prediction_patients
from synthjax.train.fd_monitor import CallableFeatures, FeatureSpace, features_of_source


def _rows(names, point, ci, key: str) -> dict[str, dict[str, Any]]:
    return {n: {key: point[i], f"{key}_ci": ci[i]} for i, n in enumerate(names)}


def utility_results(run: Run) -> dict[str, Any]:
    ecfg = run.config.evaluate
    names = prepared(run).label_names
    real = load_predictions(run, "classifier_real")
    synth = load_predictions(run, "classifier_synthetic")
    if not np.array_equal(real["labels"], synth["labels"]):
        raise RuntimeError("TRTR and TSTR were not scored on the same real test images")
    labels = real["labels"]
    keep = evaluated_labels(labels, ecfg.min_positives)
    if not keep.any():
        raise RuntimeError(
            f"no label has {ecfg.min_positives} positive and negative test images; lower "
            "evaluate.min_positives or use a larger dataset"
        )
    clusters, level = interval_clusters(run, labels)
    opts = dict(
        num_resamples=ecfg.bootstrap_resamples,
        seed=run.config.seed,
        confidence=ecfg.confidence,
        clusters=clusters,
    )
    y, p_real, p_synth = labels[:, keep], real["probs"][:, keep], synth["probs"][:, keep]
    (trtr, tstr, gap, trtr_pr, tstr_pr), means, intervals = _level_statistics(
        y, p_real, p_synth, opts, suffix=""
    )
    if clusters is None:  # the main level is the image level: copy it, do not redo it
        image_means = {f"{k}_image_level": v for k, v in means.items()}
        image_intervals = [{f"{k}_image_level": v for k, v in row.items()} for row in intervals]
    else:
        _, image_means, image_intervals = _level_statistics(
            y, p_real, p_synth, {**opts, "clusters": None}, suffix="_image_level"
        )
    kept_names = [n for n, k in zip(names, keep, strict=True) if k]
    per_label = [
        {
            "label": name,
            "positives": int(y[:, i].sum()),
            "prevalence": float(y[:, i].mean()),
            "trtr_auroc": trtr["per_label"][i],
            "tstr_auroc": tstr["per_label"][i],
            "gap": gap["per_label_gap"][i],
            "trtr_auprc": trtr_pr["per_label"][i],
            "tstr_auprc": tstr_pr["per_label"][i],
            **intervals[i],
            **image_intervals[i],
        }
        for i, name in enumerate(kept_names)
    ]
    return {
        "test_images": len(labels),
        **level,
        "labels_evaluated": kept_names,
        "labels_excluded": {n: int(labels[:, i].sum()) for i, n in enumerate(names) if not keep[i]},
        "min_positives": ecfg.min_positives,
        "trtr_auroc_mean": trtr["mean"],
        "tstr_auroc_mean": tstr["mean"],
        "auroc_gap": gap["mean_gap"],
        "trtr_auprc_mean": trtr_pr["mean"],
        "tstr_auprc_mean": tstr_pr["mean"],
        **means,
        **image_means,
        "per_label": per_label,
        "per_combination": _per_combination_utility(
            run, labels, real["probs"], synth["probs"], clusters
        ),
        "bootstrap": {k: opts[k] for k in ("num_resamples", "seed", "confidence")},
    }


def interval_clusters(run: Run, labels: np.ndarray) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The resampling clusters of the saved test predictions, and how to record them.

    Returns (clusters, fields): at patient level, str[N] the patient of each prediction
    (from the prepared test split, checked to line up with the saved labels); None at
    image level. `fields` has "interval_level" (the level actually used), "test_patients"
    (None when unknown), and "interval_level_note" when patient level was asked for but the
    prepared shards predate patient ids (the intervals then fall back to image level).
    """
    data = prepared(run)
    source, indices = data.source("test"), data.subset.indices["test"]
    patients = None
    if source.has_patients:
        patients = prediction_patients(source.patients[indices], source.labels[indices], labels)
    fields: dict[str, Any] = {
        "interval_level": run.config.evaluate.interval_level,
        "test_patients": None if patients is None else len(np.unique(patients)),
    }
    if fields["interval_level"] == "image":
        return None, fields
    if patients is None:
        note = (
            f"{data.dataset_dir} keeps no patient ids (prepared before synthjax kept them): "
            "intervals and tests are image-level; delete DIR/prepare and rerun for "
            "patient-level ones"
        )
        logging.warning("evaluate: %s", note)
        return None, {**fields, "interval_level": "image", "interval_level_note": note}
    return patients, fields


def _level_statistics(y, p_real, p_synth, opts: dict[str, Any], suffix: str):
    """TRTR, TSTR, gap and AUPRC bootstraps and the per-label DeLong tests at one level
    (`opts["clusters"]`: patients, or None for images): (the five bootstrap results, the
    means' intervals, a dict per label of its intervals and test), keys ending in `suffix`."""
    clusters = opts.get("clusters")
    trtr = auc.bootstrap_auroc(y, p_real, **opts)
    tstr = auc.bootstrap_auroc(y, p_synth, **opts)
    gap = auc.bootstrap_auroc_gap(y, p_real, p_synth, **opts)
    trtr_pr = auc.bootstrap_auprc(y, p_real, **opts)
    tstr_pr = auc.bootstrap_auprc(y, p_synth, **opts)
    means = {
        f"trtr_auroc_mean_ci{suffix}": trtr["mean_ci"],
        f"tstr_auroc_mean_ci{suffix}": tstr["mean_ci"],
        f"auroc_gap_ci{suffix}": gap["mean_gap_ci"],
        f"trtr_auprc_mean_ci{suffix}": trtr_pr["mean_ci"],
        f"tstr_auprc_mean_ci{suffix}": tstr_pr["mean_ci"],
    }
    per_label = []
    for i in range(y.shape[1]):
        delong = auc.delong_test(y[:, i], p_real[:, i], p_synth[:, i], clusters=clusters)
        per_label.append(
            {
                f"trtr_ci{suffix}": trtr["per_label_ci"][i],
                f"tstr_ci{suffix}": tstr["per_label_ci"][i],
                f"gap_ci{suffix}": gap["per_label_gap_ci"][i],
                f"delong_z{suffix}": delong["z"],
                f"delong_p{suffix}": delong["p_value"],
                f"trtr_auprc_ci{suffix}": trtr_pr["per_label_ci"][i],
                f"tstr_auprc_ci{suffix}": tstr_pr["per_label_ci"][i],
            }
        )
    return (trtr, tstr, gap, trtr_pr, tstr_pr), means, per_label


def _per_combination_utility(
    run: Run, labels, p_real, p_synth, clusters: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """One-vs-rest AUROC of each kept combination with enough test cases on both sides, at
    the level `clusters` gives (None: images), with the image-level intervals beside."""
    ecfg = run.config.evaluate
    combos = prepared(run).subset.combos
    names = prepared(run).label_names
    member = utility.combination_membership(labels, combos)
    enough = (member.sum(0) >= ecfg.min_combination_images) & (
        len(labels) - member.sum(0) >= ecfg.min_combination_images
    )
    if not enough.any():
        return []
    opts = dict(
        num_resamples=ecfg.bootstrap_resamples, seed=run.config.seed, confidence=ecfg.confidence
    )
    y = member[:, enough]
    s_real = utility.combination_log_scores(p_real, combos)[:, enough]
    s_synth = utility.combination_log_scores(p_synth, combos)[:, enough]
    trtr = auc.bootstrap_auroc(y, s_real, **opts, clusters=clusters)
    tstr = auc.bootstrap_auroc(y, s_synth, **opts, clusters=clusters)
    trtr_image = auc.bootstrap_auroc(y, s_real, **opts)
    tstr_image = auc.bootstrap_auroc(y, s_synth, **opts)
    rows = []
    for j, c in enumerate(np.flatnonzero(enough)):
        delong = auc.delong_test(y[:, j], s_real[:, j], s_synth[:, j], clusters=clusters)
        delong_image = auc.delong_test(y[:, j], s_real[:, j], s_synth[:, j])
        members = y[:, j] > 0
        patients = None if clusters is None else len(np.unique(clusters[members]))
        rows.append(
            {
                "combination": label_combination_name(combos[c], names, max_len=200),
                "test_images": int(members.sum()),
                "trtr_auroc": trtr["per_label"][j],
                "trtr_ci": trtr["per_label_ci"][j],
                "tstr_auroc": tstr["per_label"][j],
                "tstr_ci": tstr["per_label_ci"][j],
                "delong_p": delong["p_value"],
                "test_patients": patients,
                "trtr_ci_image_level": trtr_image["per_label_ci"][j],
                "tstr_ci_image_level": tstr_image["per_label_ci"][j],
                "delong_p_image_level": delong_image["p_value"],
            }
        )
    return rows


def _fidelity_in(
    real: np.ndarray,
    synth: np.ndarray,
    baseline: np.ndarray,
    k: int,
    kid_opts: dict[str, Any],
    fd_rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    patients: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """FD, KID and PRDC of synthetic vs real test features, and of real validation vs real
    test. FD on the rows `fd_rows` picks of (real, synth, baseline) (None: all); KID's
    interval resamples the (real, baseline) rows' `patients` (None: images)."""
    real_c, base_c = (None, None) if patients is None else patients
    fd_real, fd_synth, fd_base = (
        (real, synth, baseline)
        if fd_rows is None
        else (real[fd_rows[0]], synth[fd_rows[1]], baseline[fd_rows[2]])
    )
    return {
        "fd": fidelity.frechet_distance_of_features(fd_real, fd_synth),
        **fidelity.kid(real, synth, **kid_opts, real_clusters=real_c),
        **fidelity.prdc(real, synth, k=k),
        "real_baseline": {
            "fd": fidelity.frechet_distance_of_features(fd_real, fd_base),
            **fidelity.kid(real, baseline, **kid_opts, real_clusters=real_c, fake_clusters=base_c),
            **fidelity.prdc(real, baseline, k=k),
        },
    }


def fd_sample_size(requested: int, available: dict[str, int]) -> tuple[int, str | None]:
    """FD's images per side: `evaluate.fd_num_images`, or all the smallest side has, with a
    note saying so (FD shrinks as the sample grows, so only FDs at one size compare)."""
    size = min(requested, *available.values())
    if size == requested:
        return size, None
    have = ", ".join(f"{n} {name}" for name, n in available.items())
    return size, (
        f"FD at {size} images per side, not the {requested} evaluate.fd_num_images asks for "
        f"(there are {have}): FD falls as the sample grows, so these FDs compare only with "
        f"FDs at {size} images; KID, unbiased at any size, compares across sizes"
    )


def fd_sample(size: int, lengths: tuple[int, int, int], seed: int) -> tuple[np.ndarray, ...]:
    """The rows FD uses of (real test, synthetic test, real validation): `size` of each,
    seeded, so every FD of a run is at the same size."""
    return tuple(
        seeded_subset(np.arange(n), size, seed, stream)
        for n, stream in zip(lengths, (67, 79, 83), strict=True)
    )


def fidelity_results(run: Run, space: FeatureSpace) -> dict[str, Any]:
    cfg, data = run.config, prepared(run)
    ecfg = cfg.evaluate
    batch = cfg.classifier.eval_batch_size
    synth_source = load_source(run.synthetic_dir, "test")
    real_idx = seeded_subset(data.subset.indices["test"], ecfg.max_images, cfg.seed, 41)
    synth_idx = seeded_subset(np.arange(len(synth_source)), ecfg.max_images, cfg.seed, 43)
    val_idx = seeded_subset(data.subset.indices["validation"], ecfg.max_images, cfg.seed, 47)
    real_source = data.source("test")
    fd_size, fd_note = fd_sample_size(
        ecfg.fd_num_images,
        {
            "real test": len(real_idx),
            "synthetic test": len(synth_idx),
            "real validation": len(val_idx),
        },
    )
    fd_rows = fd_sample(fd_size, (len(real_idx), len(synth_idx), len(val_idx)), cfg.seed)
    kid_opts = dict(
        subset_size=ecfg.kid_subset_size,
        num_subsets=ecfg.kid_subsets,
        num_resamples=ecfg.bootstrap_resamples,
        confidence=ecfg.confidence,
        seed=cfg.seed,
    )

    patients = None
    by_patient = ecfg.interval_level == "patient"
    if by_patient and all(data.source(s).has_patients for s in ("test", "validation")):
        patients = (real_source.patients[real_idx], data.source("validation").patients[val_idx])

    def features(source, idx, sp: FeatureSpace) -> np.ndarray:
        return features_of_source(sp, source, idx, batch_size=batch)

    real = features(real_source, real_idx, space)
    synth = features(synth_source, synth_idx, space)
    baseline = features(data.source("validation"), val_idx, space)
    k = ecfg.prdc_k
    out: dict[str, Any] = {
        "feature_space": "domain (real-trained classifier's pooled features)",
        "num_real": len(real_idx),
        "num_synthetic": len(synth_idx),
        "num_real_baseline": len(val_idx),
        "fd_num_images": fd_size,
        "fd_num_images_requested": ecfg.fd_num_images,
        "fd_note": fd_note,
        "kid_interval": (
            f"{100 * ecfg.confidence:g}% percentile bootstrap over "
            + ("real patients and synthetic images" if patients else "images")
            + f" (resampled with replacement, {ecfg.bootstrap_resamples} resamples)"
        ),
        "overall": _fidelity_in(real, synth, baseline, k, kid_opts, fd_rows, patients),
        "per_combination": [],
    }
    real_labels = real_source.labels[real_idx]
    synth_labels = synth_source.labels[synth_idx]
    val_labels = data.source("validation").labels[val_idx]
    need = max(ecfg.min_combination_images, k + 1)
    for combo in data.subset.combos:
        r = utility.combination_membership(real_labels, combo[None])[:, 0] > 0
        s = utility.combination_membership(synth_labels, combo[None])[:, 0] > 0
        v = utility.combination_membership(val_labels, combo[None])[:, 0] > 0
        if min(r.sum(), s.sum(), v.sum()) < need:
            continue
        out["per_combination"].append(
            {
                "combination": label_combination_name(combo, data.label_names, max_len=200),
                "num_real": int(r.sum()),
                "num_synthetic": int(s.sum()),
                **_fidelity_in(
                    real[r],
                    synth[s],
                    baseline[v],
                    k,
                    kid_opts,
                    patients=None if patients is None else (patients[0][r], patients[1][v]),
                ),
            }
        )
    if ecfg.inception_weights:
        from synthjax.models import inception

        space_i = CallableFeatures(inception.features_fn(ecfg.inception_weights, batch_size=batch))
        out["inception"] = {
            "feature_space": "Inception-v3 pool3 (FID)",
            **_fidelity_in(
                features(real_source, real_idx, space_i),
                features(synth_source, synth_idx, space_i),
                features(data.source("validation"), val_idx, space_i),
                k,
                kid_opts,
                fd_rows,
                patients,
            ),
        }
    return out


def _images(source, indices) -> np.ndarray:
    return np.stack([source[int(i)]["image"] for i in indices])


def discrimination_results(run: Run) -> dict[str, Any]:
    """The discrimination test on real held-out (validation + test) vs synthetic images;
    with the prepared patient ids, its halves share no patient."""
    cfg, data = run.config, prepared(run)
    c2st = cfg.evaluate.c2st
    real_refs = [(s, int(i)) for s in ("validation", "test") for i in data.subset.indices[s]]
    synth_sources = {s: load_source(run.synthetic_dir, s) for s in ("validation", "test")}
    synth_refs = [(s, i) for s in ("validation", "test") for i in range(len(synth_sources[s]))]
    real_pick = seeded_subset(np.arange(len(real_refs)), c2st.max_images, cfg.seed, 53)
    synth_pick = seeded_subset(np.arange(len(synth_refs)), c2st.max_images, cfg.seed, 59)
    real = np.stack([data.source(real_refs[j][0])[real_refs[j][1]]["image"] for j in real_pick])
    synth = np.stack(
        [synth_sources[synth_refs[j][0]][synth_refs[j][1]]["image"] for j in synth_pick]
    )
    patients = None
    if all(data.source(s).has_patients for s in ("validation", "test")):
        patients = np.array(
            [str(data.source(real_refs[j][0]).patients[real_refs[j][1]]) for j in real_pick]
        )
    return discrimination.discrimination_test(
        real,
        synth,
        resolutions=discrimination.resolutions_for(cfg.dataset.resolution, tuple(c2st.resolutions)),
        train_steps=c2st.train_steps,
        batch_size=c2st.batch_size,
        learning_rate=c2st.learning_rate,
        seed=cfg.seed,
        num_resamples=cfg.evaluate.bootstrap_resamples,
        confidence=cfg.evaluate.confidence,
        real_patients=patients,
        interval_level=cfg.evaluate.interval_level,
    )


def label_fidelity_results(run: Run, classifier: Any) -> dict[str, Any]:
    """Label fidelity of the synthetic test split: the real-trained classifier's AUROC on
    each synthetic test image against the label vector it was generated from."""
    ecfg = run.config.evaluate
    source = load_source(run.synthetic_dir, "test")
    picked = seeded_subset(np.arange(len(source)), ecfg.max_images, run.config.seed, 61)
    probs, labels = [], []
    for start in range(0, len(picked), 1024):
        chunk = picked[start : start + 1024]
        records = [source[int(i)] for i in chunk]
        probs.append(classifier.predict_images(np.stack([r["image"] for r in records]))[0])
        labels.append(np.stack([r["labels"] for r in records]))
    return label_fidelity.label_fidelity(
        np.concatenate(probs),
        np.concatenate(labels),
        prepared(run).label_names,
        min_positives=ecfg.min_positives,
        num_resamples=ecfg.bootstrap_resamples,
        seed=run.config.seed,
        confidence=ecfg.confidence,
    )


def with_holm_and_study_style(utility_result: dict[str, Any]) -> dict[str, Any]:
    """`utility_results`' result with, added once its rows are built: `delong_p_holm` beside
    each row's `delong_p` (Holm over one family, every TRTR vs TSTR DeLong test of this
    report: per label and per combination), `multiplicity` (the family's size), and the
    study-style AUROC (AUC < 0.5 flipped, `add_study_style_auroc`)."""
    tests = add_holm_adjusted([utility_result["per_label"], utility_result["per_combination"]])
    utility_result["multiplicity"] = {
        "method": "holm",
        "family": "DeLong TRTR vs TSTR AUROC, per label and per label combination",
        "tests": tests,
    }
    return add_study_style_auroc(utility_result)


def run(run: Run) -> dict[str, Any]:
    from synthjax.train.classifier import DomainFeatures  # model code, loaded when needed

    result: dict[str, Any] = {"step": 0, **with_holm_and_study_style(utility_results(run))}
    classifier = DomainFeatures(run)
    result["label_fidelity"] = label_fidelity_results(run, classifier)
    result["fidelity"] = fidelity_results(run, classifier)
    result["discrimination"] = discrimination_results(run)
    card = read_json(run.synthetic_dir / "DATASET_CARD.json")
    result["privacy"] = card.get("privacy")
    result["releasable"] = card.get("releasable")
    # The fingerprint covers the numbers, not how long they took.
    timeless = json.dumps(_without(result, "wall_s"), sort_keys=True).encode()
    result["state_sha256"] = hashlib.sha256(timeless).hexdigest()
    return result


def _without(tree: Any, key: str) -> Any:
    if isinstance(tree, dict):
        return {k: _without(v, key) for k, v in tree.items() if k != key}
    if isinstance(tree, list):
        return [_without(v, key) for v in tree]
    return tree
