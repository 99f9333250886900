"""PadChest mirror: the 160K label CSV (36 columns, list-valued Labels / Localizations written as Python
list literals, stemmed Spanish-like report text) and 16-bit PNGs under <ImageDir>/<ImageID>."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cxrvlp.core.data.synthetic.cases import FINDING_TO_PADCHEST, Case, sample_case
from cxrvlp.core.data.synthetic.files import csv_text, dataset_rng, write_image, write_meta, write_text
from cxrvlp.core.data.synthetic.phantom import render_phantom

CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
COLUMNS = (
    "",
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodProjection",
    "Pediatric",
    "Modality_DICOM",
    "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM",
    "BitsStored_DICOM",
    "WindowCenter_DICOM",
    "WindowWidth_DICOM",
    "Rows_DICOM",
    "Columns_DICOM",
    "XRayTubeCurrent_DICOM",
    "Exposure_DICOM",
    "ExposureInuAs_DICOM",
    "ExposureTime",
    "RelativeXRayExposure_DICOM",
    "ReportID",
    "Report",
    "MethodLabel",
    "Labels",
    "Localizations",
    "LabelsLocalizationsBySentence",
    "labelCUIS",
    "LocalizationsCUIS",
)
# UMLS CUIs of the labels / localisations used (written as numpy-array strings like the official file)
_CUI = {
    "pleural effusion": "C2073625",
    "pneumothorax": "C1963215",
    "cardiomegaly": "C0018800",
    "consolidation": "C0521530",
    "pneumonia": "C0032285",
    "nodule": "C0028259",
    "mass": "C0577559",
    "pulmonary edema": "C0034063",
    "laminar atelectasis": "C0264494",
    "endotracheal tube": "C0336630",
    "loc left": "C0443246",
    "loc right": "C0444532",
    "loc bilateral": "C0238767",
    "loc basal": "C1282378",
    "loc upper lobe": "C0796494",
    "loc costophrenic angle": "C0230151",
    "loc apical": "C1266909",
    "loc perihilar": "C0225714",
    "loc cardiac": "C1522601",
}
# stemmed Spanish phrases, as the official reports are preprocessed (lower case, stemmed, ' . ' separated)
_PHRASE = {
    "pleural_effusion": "derram pleural",
    "pneumothorax": "neumotorax",
    "cardiomegaly": "cardiomegali",
    "consolidation": "consolid",
    "pneumonia": "neumoni",
    "nodule": "nodul pulmonar",
    "mass": "mas pulmonar",
    "edema": "edem pulmonar",
    "atelectasis": "atelectasi laminar",
    "support_devices": "tub endotraqueal",
}
_SIDE = {"left": "izquierd", "right": "derech", "bilateral": "bilateral"}
_ZONE = {"upper": "lobul superior", "middle": "lingul", "lower": "bas"}
_NEG = {
    "pleural_effusion": "sen costofren libr",
    "cardiomegaly": "siluet cardi dentr normal",
    "pneumothorax": "no se observ neumotorax",
}


def _locs(name: str, p: dict) -> list[str]:
    locs = []
    side = p.get("side")
    if side:
        locs.append(f"loc {side}")
    if name in ("pleural_effusion", "atelectasis"):
        locs += ["loc basal", "loc costophrenic angle"][: 1 + (name == "pleural_effusion")]
    elif name == "pneumothorax":
        locs.append("loc apical")
    elif name == "edema":
        locs += ["loc bilateral", "loc perihilar"]
    elif name == "cardiomegaly":
        locs.append("loc cardiac")
    elif p.get("zone") == "upper":
        locs.append("loc upper lobe")
    elif p.get("zone") == "lower":
        locs.append("loc basal")
    return locs


def padchest_report(
    case: Case, rng: np.random.Generator
) -> tuple[str, list[str], list[str], list[list[str]]]:
    """(Report text, Labels, Localizations, LabelsLocalizationsBySentence) of a case."""
    sentences, by_sentence, labels, locs = [], [], [], []
    for name, p in case.findings.items():
        lab = FINDING_TO_PADCHEST[name]
        words = [_PHRASE[name]]
        if p.get("side"):
            words.append(_SIDE[p["side"]])
        if p.get("zone") and name in ("consolidation", "pneumonia", "nodule", "mass"):
            words.append(_ZONE[p["zone"]])
        sentences.append(" ".join(words))
        loc = _locs(name, p)
        by_sentence.append([lab, *loc])
        labels.append(lab)
        locs += [x for x in loc if x not in locs]
    for name, neg in _NEG.items():
        if name not in case.findings and rng.random() < 0.4:
            sentences.append(neg)
            by_sentence.append(["normal"])
    if not case.findings:
        sentences.insert(0, str(rng.choice(["sin hallazg patolog", "sin alteracion radiolog signific"])))
        by_sentence.insert(0, ["normal"])
        labels = ["normal"]
    text = " " + " . ".join(sentences) + " ."
    return text, labels, locs, by_sentence


def _list_str(items: list[str]) -> str:
    return "[" + ", ".join(repr(x) for x in items) + "]"


def _cuis(items: list[str]) -> str:
    codes = [_CUI[x] for x in items if x in _CUI]
    return "[" + " ".join(repr(c) for c in codes) + "]"


def _digits(rng: np.random.Generator, n: int) -> str:
    return str(int(rng.integers(1, 10))) + "".join(str(int(d)) for d in rng.integers(0, 10, size=n - 1))


def write_padchest(root: str | Path, n_studies: int = 110, seed: int = 0, image_size: int = 256) -> Path:
    """Write a PadChest mirror under root; returns root.

    Each study has a PA (or AP) image and, for about 70% of studies, a lateral ("L") image, sharing one
    report and label list. Images are 16-bit PNGs at <root>/<ImageDir>/<ImageID>, the layout of the
    official download (one zip per ImageDir folder, 0..54).
    """
    root = Path(root)
    rng = dataset_rng(seed, "padchest")
    rows = []
    n_img = 0
    for _ in range(n_studies):
        case = sample_case(rng, uncertain_rate=0.0)
        text, labels, locs, by_sentence = padchest_report(case, rng)
        study_id, patient_id = _digits(rng, 38), _digits(rng, 37)
        date = f"{int(rng.integers(2009, 2018))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
        birth = f"{float(rng.integers(1925, 2000)):.1f}"
        sex = case.sex
        image_dir = int(rng.integers(0, 55))
        report_id = int(rng.integers(4_000_000, 6_000_000))
        label_cuis = _cuis(labels)
        loc_cuis = _cuis(locs)
        frontal = str(rng.choice(["PA", "AP", "AP_horizontal"], p=[0.8, 0.1, 0.1]))
        views = [frontal] + (["L"] if rng.random() < 0.7 else [])
        for view in views:
            suffix = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789"), size=6))
            image_id = f"{study_id}_{suffix}.png"
            img, _ = render_phantom(case.findings, rng, image_size, view="LATERAL" if view == "L" else "PA")
            write_image(root / str(image_dir) / image_id, img, bits=16)
            dicom_view = {"PA": "POSTEROANTERIOR", "L": "LATERAL", "AP": "ANTEROPOSTERIOR"}.get(view, "nan")
            rows.append(
                [
                    len(rows),
                    image_id,
                    image_dir,
                    date,
                    study_id,
                    patient_id,
                    birth,
                    sex,
                    dicom_view,
                    view,
                    "Manual review of DICOM fields",
                    "No",
                    "CR",
                    "ImagingDynamicsCompanyLtd",
                    "MONOCHROME2",
                    0,
                    "None",
                    "None",
                    12,
                    int(rng.integers(1800, 2900)),
                    int(rng.integers(1800, 2900)),
                    img.shape[0],
                    img.shape[1],
                    int(rng.integers(200, 400)),
                    int(rng.integers(2, 10)),
                    int(rng.integers(2000, 10000)),
                    int(rng.integers(8, 25)),
                    "None",
                    report_id,
                    text,
                    "Physician",
                    _list_str(labels),
                    _list_str(locs),
                    "[" + ", ".join(_list_str(x) for x in by_sentence) + "]",
                    label_cuis,
                    loc_cuis,
                ]
            )
            n_img += 1
    write_text(root / CSV_NAME, csv_text(COLUMNS, rows))
    counts = {"studies": n_studies, "images": n_img}
    for lab in FINDING_TO_PADCHEST.values():
        counts[f"images_{lab.replace(' ', '_')}"] = sum(1 for r in rows if repr(lab) in r[31])
    write_meta(root, "padchest", seed, counts, image_size=image_size, bits=16)
    return root
