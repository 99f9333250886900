"""MIMIC-CXR-JPG 2.0.0 mirror: image tree, split / metadata / chexpert / negbio tables and report files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from cxrvlp.core.data.synthetic.cases import MIMIC_CHEXPERT_COLUMNS, MIMIC_PREVALENCE, sample_case
from cxrvlp.core.data.synthetic.files import csv_text, dataset_rng, write_image, write_meta, write_text
from cxrvlp.core.data.synthetic.phantom import render_phantom
from cxrvlp.core.data.synthetic.reports import labels_row, make_report

SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
LABEL_COLUMNS = ("subject_id", "study_id", *MIMIC_CHEXPERT_COLUMNS)

# (probability, views of the study, examination name)
_STUDY_LAYOUTS = (
    (0.5, ("PA", "LATERAL"), "PA AND LAT"),
    (0.26, ("AP",), "PORTABLE AP"),
    (0.06, ("PA",), "PA"),
    (0.06, ("AP", "LATERAL"), "PA AND LAT"),
    (0.05, ("PA", "LL"), "PA AND LAT"),
    (0.07, ("PA", "PA", "LATERAL"), "PA AND LAT"),  # some studies have two frontal images
)
_VIEW_MEANING = {
    "PA": "postero-anterior",
    "AP": "antero-posterior",
    "LATERAL": "lateral",
    "LL": "left lateral",
}


def _unique_ints(rng: np.random.Generator, lo: int, hi: int, n: int) -> list[int]:
    seen: set[int] = set()
    out = []
    while len(out) < n:
        v = int(rng.integers(lo, hi))
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5))


def write_mimic_cxr(
    root: str | Path,
    n_patients: int = 120,
    seed: int = 0,
    image_size: int = 256,
    prevalence_overrides: Mapping[str, float] | None = None,
) -> Path:
    """Write a MIMIC-CXR-JPG 2.0.0 style mirror under root; returns root.

    Findings are drawn at MIMIC_PREVALENCE (the real labeler's rates); `prevalence_overrides` replaces some
    of them (recorded in the mirror's meta file), e.g. the demo's higher rate of the rare lung lesions.

    Layout: files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg, files/pXX/pXXXXXXXX/sXXXXXXXX.txt (reports),
    mimic-cxr-2.0.0-{split,metadata,chexpert,negbio}.csv.gz. Split by patient (about 80/10/10 percent,
    at least one patient in each of validate and test). ~2 studies per patient, ~1.7 images per study.
    """
    root = Path(root)
    unknown = sorted(set(prevalence_overrides or {}) - set(MIMIC_PREVALENCE))
    if unknown:
        known = sorted(MIMIC_PREVALENCE)
        raise ValueError(f"prevalence_overrides: unknown findings {unknown}; known: {known}")
    prevalence = {**MIMIC_PREVALENCE, **(prevalence_overrides or {})}
    rng = dataset_rng(seed, "mimic-cxr")
    subjects = sorted(_unique_ints(rng, 10_000_000, 20_000_000, n_patients))
    order = rng.permutation(n_patients)
    n_val = max(1, round(0.1 * n_patients))
    n_test = max(1, round(0.1 * n_patients))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[subjects[i]] = "validate" if rank < n_val else "test" if rank < n_val + n_test else "train"
    n_studies_per = rng.integers(1, 4, size=n_patients)
    study_ids = _unique_ints(rng, 50_000_000, 60_000_000, int(n_studies_per.sum()))
    probs = np.array([p for p, _, _ in _STUDY_LAYOUTS])
    split_rows, meta_rows, label_rows, negbio_rows = [], [], [], []
    n_images = 0
    k = 0
    for subject, n_st in zip(subjects, n_studies_per):
        pdir = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
        for _ in range(int(n_st)):
            study = study_ids[k]
            k += 1
            _, views, exam = _STUDY_LAYOUTS[int(rng.choice(len(_STUDY_LAYOUTS), p=probs / probs.sum()))]
            case = sample_case(rng, prevalence=prevalence)
            report = make_report(case, rng, style="mimic", views=exam)
            write_text(pdir / f"s{study}.txt", report.text)
            label_rows.append([subject, study, *labels_row(report.labels, MIMIC_CHEXPERT_COLUMNS)])
            negbio_rows.append([subject, study, *labels_row(_negbio(report.labels), MIMIC_CHEXPERT_COLUMNS)])
            date = (
                f"{int(rng.integers(2110, 2210))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
            )
            time = f"{int(rng.integers(0, 24))}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}"
            time += f".{int(rng.integers(0, 1000)):03d}".rstrip("0").rstrip(".")
            for view in views:
                dicom_id = _dicom_id(rng)
                img, _ = render_phantom(case.findings, rng, image_size, view=view)
                write_image(pdir / f"s{study}" / f"{dicom_id}.jpg", img)
                n_images += 1
                h, w = img.shape
                orient = "Recumbent" if exam == "PORTABLE AP" else "Erect"
                meta_rows.append(
                    [
                        dicom_id,
                        subject,
                        study,
                        f"CHEST ({exam})",
                        view,
                        h,
                        w,
                        date,
                        time,
                        f"CHEST ({exam})",
                        _VIEW_MEANING[view],
                        orient,
                    ]
                )
                split_rows.append([dicom_id, study, subject, split_of[subject]])
    write_text(root / "mimic-cxr-2.0.0-split.csv.gz", csv_text(SPLIT_COLUMNS, split_rows))
    write_text(root / "mimic-cxr-2.0.0-metadata.csv.gz", csv_text(METADATA_COLUMNS, meta_rows))
    write_text(root / "mimic-cxr-2.0.0-chexpert.csv.gz", csv_text(LABEL_COLUMNS, label_rows))
    write_text(root / "mimic-cxr-2.0.0-negbio.csv.gz", csv_text(LABEL_COLUMNS, negbio_rows))
    splits = [r[3] for r in split_rows]
    write_meta(
        root,
        "mimic-cxr",
        seed,
        {
            "patients": n_patients,
            "studies": len(label_rows),
            "images": n_images,
            **{f"images_{s}": splits.count(s) for s in ("train", "validate", "test")},
        },
        image_size=image_size,
        prevalence_overrides=dict(prevalence_overrides or {}),
    )
    return root


def _negbio(labels: dict[str, float]) -> dict[str, float]:
    """NegBio labels: as CheXpert's, except that NegBio leaves 'No Finding' to be inferred (same here).

    The two official label files differ on a few percent of studies; the mirror keeps them identical so
    that either can be chosen without changing the expected counts.
    """
    return dict(labels)
