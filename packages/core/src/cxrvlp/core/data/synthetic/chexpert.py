"""CheXpert-v1.0-small mirror: train.csv / valid.csv with images, a 500-style test label file and a
5x200-style meta CSV (MedCLIP / CXR-CLIP zero-shot classification set)."""

from __future__ import annotations

from pathlib import Path

from cxrvlp.core.data.synthetic.cases import CHEXPERT_CLASSES, Case, sample_case, truth_chexpert
from cxrvlp.core.data.synthetic.files import csv_text, dataset_rng, write_image, write_meta, write_text
from cxrvlp.core.data.synthetic.phantom import render_phantom
from cxrvlp.core.data.synthetic.prompts import write_prompt_bank
from cxrvlp.core.data.synthetic.reports import labels_row, make_report

CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLASSES)
TEST_COLUMNS = ("Path", *CHEXPERT_CLASSES)
FIVE_X_200_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
FIVE_X_200_COLUMNS = ("", "imgpath", "subject_id", *CHEXPERT_CLASSES)
_FIVE_TO_FINDING = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Pleural Effusion": "pleural_effusion",
}
_MEDCLIP_PREFIX = "./data/CheXpert/data/"  # as in MedCLIP's chexpert-5x200-meta.csv imgpath column


def _truth_row(case: Case) -> list[str]:
    t = truth_chexpert(case)
    return [f"{t[c]:.1f}" for c in CHEXPERT_CLASSES]


def write_chexpert(
    root: str | Path,
    n_train_patients: int = 150,
    n_valid: int = 60,
    n_test: int = 200,
    n_per_class: int = 20,
    seed: int = 0,
    image_size: int = 256,
) -> Path:
    """Write a CheXpert mirror under root; returns root.

    root/CheXpert-v1.0-small/{train.csv, valid.csv, train/..., valid/...}: official columns, Path values
    relative to root, train labels 1.0 / 0.0 / -1.0 / blank from the report text, valid labels 0.0 / 1.0.
    root/filter_test_labels.csv + root/CheXpert-v1.0/test/...: the 500-style expert test set (0/1, n_test).
    root/chexpert-5x200-meta.csv: n_per_class train images per 5x200 class (one of the five positive).
    root/synthetic_train_prompts.json: a label-to-sentence bank in CXR-CLIP's prompt JSON layout (ours).
    """
    root = Path(root)
    rng = dataset_rng(seed, "chexpert")
    small = "CheXpert-v1.0-small"
    train_rows: list[list] = []
    five_rows: list[list] = []
    pid = 0

    def add_train_patient(case_fn, n_studies: int) -> list[int]:
        nonlocal pid
        pid += 1
        sex = str(rng.choice(["Male", "Female"]))
        age = int(rng.integers(18, 91))
        rows = []
        for s in range(1, n_studies + 1):
            case = case_fn()
            labels = make_report(case, rng, style="mimic").labels  # labels as the labeler reads the report
            views = [("Frontal", str(rng.choice(["AP", "PA"], p=[0.7, 0.3])))]
            if rng.random() < 0.3:
                views.append(("Lateral", ""))
            for v, (fl, appa) in enumerate(views, start=1):
                rel = f"{small}/train/patient{pid:05d}/study{s}/view{v}_{fl.lower()}.jpg"
                img, _ = render_phantom(case.findings, rng, image_size, view=appa or "LATERAL")
                write_image(root / rel, img)
                rows.append(len(train_rows))
                train_rows.append([rel, sex, age, fl, appa, *labels_row(labels, CHEXPERT_CLASSES)])
        return rows

    for _ in range(n_train_patients):
        add_train_patient(lambda: sample_case(rng), int(rng.integers(1, 3)))
    for cls in FIVE_X_200_CLASSES:
        finding = _FIVE_TO_FINDING[cls]
        for _ in range(n_per_class):
            case = sample_case(rng, force=(finding,), only=(finding,), uncertain_rate=0.0)
            idx = add_train_patient(lambda c=case: c, 1)[0]
            rel = train_rows[idx][0]
            if train_rows[idx][3] != "Frontal":
                continue
            subject = "-".join(rel.split("/")[2:4])
            five_rows.append([idx, _MEDCLIP_PREFIX + rel, subject, *_truth_row(case)])
    write_text(root / small / "train.csv", csv_text(CHEXPERT_COLUMNS, train_rows))
    write_text(root / "chexpert-5x200-meta.csv", csv_text(FIVE_X_200_COLUMNS, five_rows))

    # valid: expert labels (0/1 for every class), patients numbered after train as in the official set
    valid_rows = []
    for i in range(n_valid):
        case = sample_case(rng, uncertain_rate=0.0)
        appa = str(rng.choice(["AP", "PA"], p=[0.75, 0.25]))
        rel = f"{small}/valid/patient{64541 + i:05d}/study1/view1_frontal.jpg"
        img, _ = render_phantom(case.findings, rng, image_size, view=appa)
        write_image(root / rel, img)
        sex, age = str(rng.choice(["Male", "Female"])), int(rng.integers(18, 91))
        valid_rows.append([rel, sex, age, "Frontal", appa, *_truth_row(case)])
    write_text(root / small / "valid.csv", csv_text(CHEXPERT_COLUMNS, valid_rows))

    # the 500-style test set: full-resolution folder name "CheXpert-v1.0/test", 0/1 labels, Path + 14 labels
    test_rows = []
    for i in range(n_test):
        case = sample_case(rng, uncertain_rate=0.0)
        rel = f"CheXpert-v1.0/test/patient{64741 + i:05d}/study1/view1_frontal.jpg"
        img, _ = render_phantom(case.findings, rng, image_size, view=str(rng.choice(["AP", "PA"])))
        write_image(root / rel, img)
        test_rows.append([rel, *_truth_row(case)])
    write_text(root / "filter_test_labels.csv", csv_text(TEST_COLUMNS, test_rows))

    counts = {"train_images": len(train_rows), "train_patients": pid, "valid_images": len(valid_rows)}
    counts |= {"test_images": len(test_rows), "five_x_200_images": len(five_rows)}
    counts |= {
        f"test_positive_{c}": int(sum(float(r[1 + j]) for r in test_rows))
        for j, c in enumerate(CHEXPERT_CLASSES)
    }
    write_prompt_bank(root)
    write_meta(root, "chexpert", seed, counts, image_size=image_size)
    return root
