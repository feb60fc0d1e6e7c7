"""The report's verdict and text: the numbers a person reads first.

`verdict` decides 'release', 'release with caveats' or 'do not release' from the numbers
of `report.json`, and `report_markdown` writes `report.md` from them (tables, figures, the
verdict with its reasons). The `report` stage (`synthjax/stages/report.py`) gathers every
stage's `summary.json` into `report.json` and draws the figures (`report_figures.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

REPORT_VERSION = 3

# The verdict's thresholds. A discrimination test AUROC above EASY_TO_TELL, or a
# synthetic set whose precision or recall falls below HALF of the real baseline's, is a
# caveat, not a refusal: a useful, private dataset may still look synthetic.
EASY_TO_TELL = 0.9
HALF = 0.5


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _fmt_ci(ci) -> str:
    return "" if not ci or ci[0] is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def _section(title: str, *paragraphs: str) -> list[str]:
    """A `## title` and its paragraphs, each followed by a blank line."""
    return [f"## {title}", ""] + [line for p in paragraphs for line in (p, "")]


def _table(header: str, rows: Iterable[str]) -> list[str]:
    """A markdown table: `header` (`| a | b |`), its separator row, then `rows`."""
    return [header, "|" + "---|" * (header.count("|") - 1), *rows]


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """'release', 'release with caveats' or 'do not release', with the reasons.

    Refusals: the memorization audit failed (and no override), the synthetic-trained
    classifier is not measurably better than chance (TSTR mean AUROC interval reaching 0.5),
    or the synthetic images do not show their labels (label fidelity's interval reaching 0.5).
    Caveats: the discrimination test tells real from synthetic easily, or fidelity is far
    below the real baseline. Stages that did not run make their check 'not measured', which refuses.
    """
    refusals, caveats, passes = [], [], []
    privacy = report.get("privacy")
    if not privacy:
        refusals.append("privacy: not measured (synthesize recorded no memorization audit)")
    elif not privacy.get("audit_passed"):
        if privacy.get("releasable"):
            caveats.append(
                f"privacy: the audit failed ({_audit_summary(privacy)}) and the dataset is "
                f"released by override: {privacy['override']['reason']!r}"
            )
        else:
            refusals.append(
                f"privacy: the audit failed ({_audit_summary(privacy)}; DATASET_CARD.json: "
                "releasable false); look at the closest-pairs grids"
            )
    else:
        passes.append(f"privacy: the audit passed ({_audit_summary(privacy)})")
    for space, why in ((privacy or {}).get("not_audited") or {}).items():
        caveats.append(f"privacy: not audited in {space} ({why})")
    tstr, ci = report.get("tstr_auroc_mean"), report.get("tstr_auroc_mean_ci")
    if tstr is None or not ci or ci[0] is None:
        refusals.append("utility: not measured (no TSTR result)")
    elif ci[0] <= 0.5:
        refusals.append(
            f"utility: TSTR mean AUROC {tstr:.3f}{_fmt_ci(ci)} is not above chance; the "
            "synthetic data carries no measurable signal"
        )
    else:
        passes.append(
            f"utility: TSTR mean AUROC {tstr:.3f}{_fmt_ci(ci)} is above chance (TRTR "
            f"{_fmt(report.get('trtr_auroc_mean'))}, gap {_fmt(report.get('auroc_gap'))})"
        )
    lf, lf_ci = report.get("label_fidelity_auroc_mean"), report.get("label_fidelity_auroc_mean_ci")
    if lf is None or not lf_ci or lf_ci[0] is None:
        refusals.append("label fidelity: not measured (evaluate recorded no label fidelity)")
    elif lf_ci[0] <= 0.5:
        refusals.append(
            f"label fidelity: the real-trained classifier's AUROC on synthetic images against "
            f"their own labels is {lf:.3f}{_fmt_ci(lf_ci)}, not above chance: the generator "
            "ignores its labels"
        )
    else:
        passes.append(
            f"label fidelity: the real-trained classifier's AUROC on synthetic images against "
            f"their own labels is {lf:.3f}{_fmt_ci(lf_ci)} (TRTR on real test images: "
            f"{_fmt(report.get('trtr_auroc_mean'))})"
        )
    per_resolution = (report.get("discrimination") or {}).get("per_resolution") or []
    if per_resolution:
        native = max(per_resolution, key=lambda r: r["resolution"])
        lo = native["auroc_ci"][0]
        if lo is not None and lo > EASY_TO_TELL:
            caveats.append(
                f"discrimination: an automated reader tells real from synthetic at "
                f"{native['resolution']}x{native['resolution']} with AUROC "
                f"{native['auroc']:.3f}{_fmt_ci(native['auroc_ci'])}"
            )
    fid = ((report.get("fidelity") or {}).get("overall")) or {}
    base = fid.get("real_baseline") or {}
    for name in ("precision", "recall"):
        if fid.get(name) is not None and base.get(name) and fid[name] < HALF * base[name]:
            caveats.append(
                f"fidelity: {name} {fid[name]:.3f} is below half the real baseline's "
                f"{base[name]:.3f}"
            )
    decision = "do not release" if refusals else "release with caveats" if caveats else "release"
    return {"decision": decision, "refusals": refusals, "caveats": caveats, "passed": passes}


def _verdict_lines(v: dict[str, Any]) -> list[str]:
    lines = [f"## Verdict: **{v['decision']}**", ""]
    for title, items in (
        ("Refused", v["refusals"]),
        ("Caveats", v["caveats"]),
        ("Passed", v["passed"]),
    ):
        lines += [f"- {title}: {item}" for item in items]
    return [*lines, ""]


_LEVEL_ROWS = (
    ("TRTR mean AUROC", "trtr_auroc_mean_ci"),
    ("TSTR mean AUROC", "tstr_auroc_mean_ci"),
    ("gap TRTR - TSTR", "auroc_gap_ci"),
)


def _level_widths(r: dict[str, Any]) -> list[str]:
    """The main intervals at patient and at image level side by side, with the ratio of
    their widths: how much resampling patients instead of images changes them."""
    rows = []
    for name, key in _LEVEL_ROWS:
        patient, image = r.get(key), r.get(f"{key}_image_level")
        if not patient or not image or None in (*patient, *image):
            continue
        wide_p, wide_i = patient[1] - patient[0], image[1] - image[0]
        ratio = f"{wide_p / wide_i:.2f}x" if wide_i > 0 else "n/a"
        rows.append(
            f"| {name} |{_fmt_ci(patient)} ({wide_p:.3f}) |{_fmt_ci(image)} ({wide_i:.3f}) "
            f"| {ratio} |"
        )
    if not rows:
        return []
    return [
        "",
        "| 95% CI (width) | patient level | image level | width ratio |",
        "|---|---|---|---|",
        *rows,
        "",
        "Patient-level intervals are wider when a patient's images resemble each other and "
        "share their labels; they can come out narrower when each patient holds both "
        "positive and negative images (a CT series), as a patient effect shared by the two "
        "sides of a comparison cancels.",
    ]


def _level_and_protocol_note(r: dict[str, Any]) -> list[str]:
    """What the intervals resample and how the classifiers saw the images (reports written
    before these were recorded say nothing)."""
    lines = []
    level = r.get("interval_level")
    if level == "patient":
        lines.append(
            f"Intervals and DeLong tests are at patient level ({r.get('test_patients')} test "
            f"patients, {r.get('test_images')} images): the bootstrap resamples patients with "
            "all their images, DeLong is Obuchowski's clustered test; the image-level ones "
            "(the study's) are in report.json as `*_image_level`."
        )
        lines += _level_widths(r)
    elif level == "image":
        note = r.get("interval_level_note")
        lines.append(
            "Intervals and DeLong tests are at image level" + (f": {note}" if note else ".")
        )
    protocol = r.get("classifier_protocol") or {}
    if protocol.get("name") == "study":
        weights = protocol.get("initial_weights")
        start = f"from {weights['file']}" if isinstance(weights, dict) else "from RANDOM weights"
        side = protocol.get("input_resolution")
        lines.append(
            f"Classifiers: the study's protocol (3 channels, {side} x {side}, "
            f"ImageNet-normalised), DenseNet started {start}."
        )
    return ["", *lines] if lines else []


def _utility_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        *_section("Utility: a classifier trained on synthetic data, tested on real data"),
        "| | mean test AUROC (95% CI) | mean test AUPRC (95% CI) |",
        "|---|---|---|",
        f"| TRTR (trained on real) | {_fmt(r['trtr_auroc_mean'])}{_fmt_ci(r['trtr_auroc_mean_ci'])}"
        f" | {_fmt(r['trtr_auprc_mean'])}{_fmt_ci(r['trtr_auprc_mean_ci'])} |",
        f"| TSTR (trained on synthetic) | {_fmt(r['tstr_auroc_mean'])}"
        f"{_fmt_ci(r['tstr_auroc_mean_ci'])} | {_fmt(r['tstr_auprc_mean'])}"
        f"{_fmt_ci(r['tstr_auprc_mean_ci'])} |",
        f"| gap TRTR - TSTR (paired) | {_fmt(r['auroc_gap'])}{_fmt_ci(r['auroc_gap_ci'])} | |",
        *_study_style_rows(r),
        "",
        "Both classifiers are tested on the same real test images. AUCs below 0.5 are "
        "reported as they are; AUPRC's chance level is the label's prevalence. DeLong p: "
        f"DeLong's paired test of TRTR vs TSTR AUROC.{_holm_note(r)}",
        *_level_and_protocol_note(r),
        *_study_style_note(r),
        "",
        *_table(
            "| label | test positives | TRTR AUROC | TSTR AUROC | gap | DeLong p | Holm p | "
            "TRTR AUPRC | TSTR AUPRC |",
            (
                f"| {row['label']} | {row['positives']} | {_fmt(row['trtr_auroc'])}"
                f"{_fmt_ci(row['trtr_ci'])} | {_fmt(row['tstr_auroc'])}{_fmt_ci(row['tstr_ci'])} "
                f"| {_fmt(row['gap'])}{_fmt_ci(row['gap_ci'])} | {_fmt_p(row.get('delong_p'))} "
                f"| {_fmt_p(row.get('delong_p_holm'))} "
                f"| {_fmt(row.get('trtr_auprc'))} | {_fmt(row.get('tstr_auprc'))} |"
                for row in r["per_label"]
            ),
        ),
    ]
    if r["labels_excluded"]:
        excluded = ", ".join(f"{k} ({v})" for k, v in r["labels_excluded"].items())
        need = r.get("min_positives")
        rule = f"fewer than {need} test positives or negatives" if need else "too few test cases"
        lines += ["", f"Not in the mean ({rule}; test positives shown): {excluded}."]
    if r["per_combination"]:
        lines += [
            "",
            "Per label combination (one-vs-rest AUROC of the combination's log-probability):",
            "",
            *_table(
                "| combination | test images | TRTR | TSTR | DeLong p | Holm p |",
                (
                    f"| {row['combination']} | {row['test_images']} | {_fmt(row['trtr_auroc'])}"
                    f"{_fmt_ci(row['trtr_ci'])} | {_fmt(row['tstr_auroc'])}"
                    f"{_fmt_ci(row['tstr_ci'])} | {_fmt_p(row['delong_p'])} "
                    f"| {_fmt_p(row.get('delong_p_holm'))} |"
                    for row in r["per_combination"]
                ),
            ),
        ]
    return [*lines, ""]


def _holm_note(r: dict[str, Any]) -> str:
    """The sentence saying what the Holm column adjusts for."""
    tests = (r.get("multiplicity") or {}).get("tests")
    if not tests:
        return ""
    return (
        f" Holm p: the DeLong p adjusted by Holm's step-down method over all {tests} DeLong "
        "tests of this report (labels and label combinations, one family): a Holm p below "
        "alpha keeps the chance of any false difference among them at alpha."
    )


def _study_style_rows(r: dict[str, Any]) -> list[str]:
    """Headline rows of the study-style AUROC (AUC < 0.5 flipped), when the report has it."""
    return [
        f"| {name}, study-style (AUC < 0.5 flipped) | {_fmt(r[key])} | |"
        for name, key in (
            ("TRTR", "trtr_auroc_mean_study_style"),
            ("TSTR", "tstr_auroc_mean_study_style"),
        )
        if r.get(key) is not None
    ]


def _study_style_note(r: dict[str, Any]) -> list[str]:
    """What the study-style rows are, and which per-label AUCs the flip changed."""
    if r.get("tstr_auroc_mean_study_style") is None:
        return []
    flipped = [
        f"{side.upper()} {row['label']} {row[f'{side}_auroc']:.3f} -> "
        f"{row[f'{side}_auroc_study_style']:.3f}"
        for side in ("trtr", "tstr")
        for row in r.get("per_label", [])
        if row.get(f"{side}_auroc") is not None
        and row.get(f"{side}_auroc_study_style") is not None
        and row[f"{side}_auroc_study_style"] != row[f"{side}_auroc"]
    ]
    return [
        "",
        "Study-style: each label's AUROC as max(AUC, 1 - AUC), then averaged, as the study's "
        "evaluation code did. The study flipped AUC < 0.5; ours does not, so near chance the "
        "study-style mean runs higher. Compare the study's published figures with these rows "
        "only; everything else here uses ours. "
        + (f"Flipped: {', '.join(flipped)}." if flipped else "No label's AUC was below 0.5."),
    ]


def _label_fidelity_lines(r: dict[str, Any]) -> list[str]:
    per_label = r.get("label_fidelity_per_label")
    if r.get("label_fidelity_auroc_mean") is None or not per_label:
        return []
    trtr = {row["label"]: row["trtr_auroc"] for row in r.get("per_label", [])}
    lines = [
        *_section(
            "Label fidelity: do synthetic images show the labels they were generated from?",
            "The real-trained classifier scores the synthetic test images; its AUROC against "
            "the label vectors they were generated from is the label fidelity (0.5: the labels "
            "left no trace). Its TRTR AUROC on real test images is what a perfect generator "
            "reaches.",
            f"Mean: **{_fmt(r['label_fidelity_auroc_mean'])}"
            f"{_fmt_ci(r.get('label_fidelity_auroc_mean_ci'))}**",
        ),
        *_table(
            "| label | label fidelity | TRTR on real test images |",
            (
                f"| {name} | {_fmt(row['auroc'])}{_fmt_ci(row.get('auroc_ci'))} | "
                f"{_fmt(trtr.get(name))} |"
                for name, row in per_label.items()
            ),
        ),
    ]
    return [*lines, ""]


def _fmt_kid(m: dict[str, Any]) -> str:
    """KID to 3 significant digits, with its interval (n/a in reports from before KID)."""
    if m.get("kid") is None:
        return "n/a"
    ci = m.get("kid_ci")
    return f"{m['kid']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")


def _fidelity_lines(fid: dict[str, Any] | None) -> list[str]:
    if not fid:
        return []
    lines = _section(
        "Fidelity: synthetic vs real test images",
        f"In the {fid['feature_space']}; {fid['num_real']} real and {fid['num_synthetic']} "
        f"synthetic test images. The real baseline compares {fid['num_real_baseline']} real "
        "validation images with the real test images: what a perfect generator would score.",
        *_fd_kid_paragraphs(fid),
    )
    rows = [("synthetic", fid["overall"]), ("real baseline", fid["overall"]["real_baseline"])]
    if "inception" in fid:
        rows.append(("synthetic (Inception)", fid["inception"]))
        rows.append(("real baseline (Inception)", fid["inception"]["real_baseline"]))
    rows += [(f"{c['combination']} ({c['num_real']} real)", c) for c in fid["per_combination"]]
    lines += _table(
        "| | FD (lower is better) | KID (95% CI) | precision | recall | density | coverage |",
        (
            f"| {name} | {_fmt(m['fd'], 2)} | {_fmt_kid(m)} | {_fmt(m['precision'])} "
            f"| {_fmt(m['recall'])} | {_fmt(m['density'])} | {_fmt(m['coverage'])} |"
            for name, m in rows
        ),
    )
    return [*lines, ""]


def _fd_kid_paragraphs(fid: dict[str, Any]) -> list[str]:
    """What sample size the FDs are at, and what KID is (reports from before: nothing)."""
    if fid.get("fd_num_images") is None:
        return []
    size = (
        f"The overall FDs are at {fid['fd_num_images']} images per side "
        "(`evaluate.fd_num_images`): FD falls as the sample grows, so FDs compare only at "
        "one size; per combination, at the combination's own counts."
    )
    if fid.get("fd_note"):
        size = f"**Note:** {fid['fd_note']}."

    def subsets(m: dict[str, Any]) -> str:
        n = m["kid_subsets"]
        return f"{n} subset{'s' if n > 1 else ''} of {m['kid_subset_size']} images per side"

    overall = fid["overall"]
    kid = (
        "KID: the unbiased MMD² with the cubic kernel (Binkowski et al. 2018), averaged over "
        f"{subsets(overall)} (the real baseline: {subsets(overall['real_baseline'])}; per "
        "combination, of the combination's images); 0 on average for a perfect generator at "
        f"any sample size. Interval: {fid['kid_interval']}."
    )
    return [size, kid]


def _discrimination_lines(d: dict[str, Any] | None) -> list[str]:
    if not d:
        return []
    lines = [
        *_section(
            "Discrimination: an automated reader (classifier two-sample test)",
            d.get("protocol", ""),
        ),
        *_table(
            "| resolution | test images (real + synthetic) | AUROC (95% CI) | accuracy |",
            (
                f"| {r['resolution']}x{r['resolution']} | {r['test_real']} + {r['test_fake']} | "
                f"{_fmt(r['auroc'])}{_fmt_ci(r['auroc_ci'])} | {_fmt(r['accuracy'])} |"
                for r in d["per_resolution"]
            ),
        ),
    ]
    return [*lines, "", "0.5 = indistinguishable; 1.0 = told apart every time.", ""]


def _audit_summary(p: dict[str, Any]) -> str:
    """One line of the audit: copies below the floor and the share of close images."""
    text = f"copy rate {100 * p['copy_rate']:.2f}%"
    if "close_rate" in p:
        text += f", close rate {100 * p['close_rate']:.2f}%"
    if p.get("flagged") is not None and p.get("audit_passed"):
        text += f"; {p['flagged']} close image(s) replaced or dropped before release"
    return text


def _privacy_lines(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    lines = [
        *_section(
            "Privacy: memorization audit",
            f"Every synthetic image ({p['audited_synthetic']}) against {p['train']} training "
            f"and {p['heldout']} real held-out images. A copy lies below the floor, where near "
            "copies of training images lie. Seen share: how often a synthetic image's nearest "
            "real image is a training one, against chance (memorization). Close: nearer a "
            f"training image than all but {p['percentile']:g}% of held-out images are (replaced "
            f"before release). Tests one-sided, alpha {p.get('alpha', 0.01):g} over all.",
        ),
        *_table(
            "| space | copies (held-out below floor) | seen share (chance) | memorization p | "
            "close (held-out) | median distance ratio (synthetic / held-out) |",
            (
                f"| {name} | {s['copies']} ({s['heldout_below_floor']}) | "
                f"{100 * s['seen_share']:.1f}% ({100 * s['seen_share_expected']:.1f}%) | "
                f"{_fmt_p(s['seen_p_value'])} | "
                f"{100 * s['close_rate']:.2f}% ({100 * s['heldout_close_rate']:.2f}%) | "
                f"{_fmt(s['median_distance_ratio'])} |"
                for name, s in p["spaces"].items()
            ),
        ),
    ]
    lines += ["", *[f"- {reason}" for reason in p["reasons"]], ""]
    return lines


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# synthjax report: {report['dataset']}"
        f"{' (built-in phantom)' if report['phantom'] else ''}, "
        f"{report['resolution']}x{report['resolution']}, {report['gan_arch']} GAN",
        "",
        f"{report['num_classes']} label combinations; images per split: {report['images']}; "
        f"GAN trained for {_fmt(report['gan_kimg'], 1)} kimg.",
        "",
        *_verdict_lines(report["verdict"]),
        *_utility_lines(report),
        *_label_fidelity_lines(report),
        *_fidelity_lines(report.get("fidelity")),
        *_discrimination_lines(report.get("discrimination")),
        *_privacy_lines(report.get("privacy")),
    ]
    if report["figures"]:
        lines += ["## Figures", ""]
        lines += [f"![{name}]({path})" for name, path in report["figures"].items()]
        lines.append("")
    lines += _table(
        "| stage | wall time (s) | state_sha256 |",
        (
            f"| {stage} | {_fmt(wall, 1)} | `{(report['state_sha256'][stage] or '')[:16]}` |"
            for stage, wall in report["wall_s"].items()
        ),
    )
    if report.get("attribution"):
        lines += ["", report["attribution"]]
    return "\n".join(lines) + "\n"
