"""The benchmark's dataset registry: what each evaluation set is, its classes, tasks and splits.

Each entry names the core reader (`cxrvlp.core.data.get_dataset`), the split used for testing and the
split used to choose thresholds (never the test split), the classes in the paper's order, which tasks it
supports and what files the reader expects. Adding a dataset is one `register(...)` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cxrvlp.core.data.chestx_det import DET10_CLASSES
from cxrvlp.core.data.labels import CHESTXRAY14_CLASSES, CHEXPERT5
from cxrvlp.core.data.ms_cxr import CSV_NAMES as _MS_CXR_CSV_NAMES
from cxrvlp.core.data.ms_cxr import MSCXR_CLASSES

NIH14 = CHESTXRAY14_CLASSES
NIH_BBOX8 = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
OPENI18 = (  # CARZero's Open-I classes (carzero.md §2.3, §7)
    "Atelectasis",
    "Cardiomegaly",
    "Pleural Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural Thickening",
    "Hernia",
    "Fracture",
    "Lung Opacity",
    "Lesion",
    "Calcified Granuloma",
    "Granuloma",
)
PADCHEST_SEEN = (  # MAVL's PadChest-seen classes as PadChest label strings (mavl.md §6.1)
    "normal",
    "pleural effusion",
    "pacemaker",
    "atelectasis",
    "pneumonia",
    "consolidation",
    "cardiomegaly",
    "emphysema",
    "nodule",
    "edema",
    "pneumothorax",
    "fracture",
    "mass",
    "catheter",
)
PADCHEST_RARE = (  # MAVL's 39 "rare" findings (mavl.md §6.1)
    "suture material",
    "sternotomy",
    "supra aortic elongation",
    "metal",
    "abnormal foreign body",
    "central venous catheter via jugular vein",
    "vertebral anterior compression",
    "diaphragmatic eventration",
    "calcified densities",
    "volume loss",
    "single chamber device",
    "vertebral compression",
    "bullas",
    "axial hyperostosis",
    "aortic button enlargement",
    "calcified granuloma",
    "clavicle fracture",
    "dual chamber device",
    "mediastinic lipomatosis",
    "esophagic dilatation",
    "azygoesophageal recess shift",
    "breast mass",
    "round atelectasis",
    "surgery humeral",
    "aortic aneurysm",
    "nephrostomy tube",
    "sternoclavicular junction hypertrophy",
    "pulmonary artery hypertension",
    "pleural mass",
    "empyema",
    "external foreign body",
    "respiratory distress",
    "total atelectasis",
    "ventriculoperitoneal drain tube",
    "right sided aortic arch",
    "aortic endoprosthesis",
    "cyst",
    "pulmonary venous hypertension",
    "double J stent",
)
PADCHEST_UNSEEN_26 = (  # MAVL's 26 listed unseen findings (mavl.md §6.1)
    "hypoexpansion basal",
    "non axial articular degenerative changes",
    "central venous catheter via jugular vein",
    "multiple nodules",
    "COPD signs",
    "calcified densities",
    "mediastinal shift",
    "hiatal hernia",
    "volume loss",
    "mediastinic lipomatosis",
    "central venous catheter",
    "ground glass pattern",
    "surgery lung",
    "miliary opacities",
    "sclerotic bone lesion",
    "pleural plaques",
    "osteosynthesis material",
    "calcified mediastinal adenopathy",
    "apical pleural thickening",
    "aortic elongation",
    "major fissure thickening",
    "callus rib fracture",
    "pulmonary venous hypertension",
    "cervical rib",
    "loculated pleural effusion",
    "flattened diaphragm",
)
# MAVL builds PadChest-unseen as a Python set() of the 26 and the 39 rare (random order; the order does not
# change a macro AUROC, so ours is sorted). Five names are in both lists: 60 classes, not the spec's "64".
PADCHEST_UNSEEN = tuple(sorted(set(PADCHEST_UNSEEN_26) | set(PADCHEST_RARE)))
VINDR18 = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Mediastinal shift",
    "Nodule/Mass",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "Rib fracture",
    "Lung tumor",
    "Pneumonia",
    "Tuberculosis",
)
CHESTXDET10 = DET10_CLASSES
MSCXR8 = MSCXR_CLASSES  # the 8 MS-CXR categories, as core's reader defines them
MS_CXR_CSV = _MS_CXR_CSV_NAMES[0]

TASKS = ("zeroshot", "grounding", "retrieval", "linear_probe", "segmentation", "finetune")
# what `run` does unless --tasks says otherwise: end-to-end fine-tuning (hours per model on real data) is
# asked for by name
DEFAULT_TASKS = tuple(t for t in TASKS if t != "finetune")

# Spelling differences between our class names and a reader's, compared after lower-casing and
# removing spaces, underscores and hyphens.
ALIASES: dict[str, tuple[str, ...]] = {
    "effusion": ("pleuraleffusion", "effusion"),
    "pleuraleffusion": ("pleuraleffusion", "effusion"),
    "pleuralthickening": ("pleuralthickening", "pleuralthicken", "thickening"),
    "infiltration": ("infiltration", "infiltrate", "infiltrates"),
    "infiltrate": ("infiltrate", "infiltration", "infiltrates"),
    "pneumonia": ("pneumonia", "lungopacity"),
    "covid19": ("covid19", "positive", "covid"),
}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


@dataclass(frozen=True)
class BenchDataset:
    """One evaluation set: how to read it and what to measure on it."""

    name: str
    reader: str  # name for cxrvlp.core.data.get_dataset
    classes: tuple[str, ...]
    tasks: tuple[str, ...]
    test_split: str
    val_split: str | None  # threshold choice and probe model selection; never the test split
    train_split: str | None  # linear probe / segmentation training
    expected_files: str  # what the reader needs under the root, for the missing-root error
    description: str
    multiclass: bool = False  # one positive class per image (CheXpert 5x200): accuracy of the argmax
    grounding_classes: tuple[str, ...] = ()
    reader_kwargs: dict[str, Any] = field(default_factory=dict)
    extra: bool = False  # not one of the seven main datasets
    # our split name -> reader kwargs; "_part": "train"|"val"|"test" takes that share of a deterministic
    # patient-level 70/15/15 split of what the reader returns (datasets without official split files).
    split_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    grounding_split: str | None = None  # defaults to test_split (ChestX-ray14: the bbox subset)
    # classes = the reader's own list for the test split minus these (CARZero's PadChest: every label string
    # of the manually annotated subset except "normal"); `classes` is then filled in when the data are opened
    classes_from_reader: tuple[str, ...] | None = None
    rare_k: int = 0  # also report macro AUROC over the k least frequent test classes (CARZero's PadChest20)
    # what grounding queries: "classes" (one prompt per grounding class) or "phrases" (MS-CXR: the phrase of
    # each box, AFLoc's protocol)
    grounding_queries: str = "classes"

    def supports(self, task: str) -> bool:
        """Whether `task` is defined on this dataset."""
        return task in self.tasks


_REGISTRY: dict[str, BenchDataset] = {}


def register(ds: BenchDataset) -> BenchDataset:
    """Add a dataset to the registry (names are unique)."""
    if ds.name in _REGISTRY:
        raise KeyError(f"benchmark dataset '{ds.name}' is registered twice")
    bad = [t for t in ds.tasks if t not in TASKS]
    if bad:
        raise ValueError(f"{ds.name}: unknown tasks {bad}; known: {TASKS}")
    _REGISTRY[ds.name] = ds
    return ds


def get(name: str) -> BenchDataset:
    """The registry entry `name`, or a KeyError listing what exists."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown benchmark dataset '{name}'; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def names(include_extra: bool = True) -> list[str]:
    """Registered dataset names in registration order."""
    return [n for n, d in _REGISTRY.items() if include_extra or not d.extra]


def class_index(reader_classes: Sequence[str], wanted: Sequence[str], dataset: str) -> list[int]:
    """Indices of `wanted` classes in a reader's class list (case/spacing-insensitive, known aliases)."""
    keys = {_key(c): i for i, c in enumerate(reader_classes)}
    out = []
    for w in wanted:
        k = _key(w)
        for cand in (k, *ALIASES.get(k, ())):
            if cand in keys:
                out.append(keys[cand])
                break
        else:
            raise KeyError(f"{dataset}: class '{w}' not among the reader's classes {list(reader_classes)}")
    return out


def select_labels(labels: np.ndarray, idx: Sequence[int]) -> np.ndarray:
    """(N, C_reader) -> (N, C) with the benchmark's class order."""
    return labels[:, list(idx)]


def _mavl_padchest(name: str, classes: tuple[str, ...], description: str) -> BenchDataset:
    """One of MAVL's PadChest class sets on a derived patient-level test split (val for thresholds)."""
    return BenchDataset(
        name,
        "padchest",
        classes,
        ("zeroshot",),
        test_split="test",
        val_split="val",
        train_split=None,
        expected_files=PADCHEST_FILES,
        description=description,
        reader_kwargs={"classes": classes},
        split_kwargs={"test": {"_part": "test"}, "val": {"_part": "val"}},
    )


def _five_by_200(name: str, reader: str, files: str, description: str, split: dict) -> BenchDataset:
    """A 5x200 set: one CheXpert competition class per image, zero-shot argmax accuracy and retrieval."""
    return BenchDataset(
        name,
        reader,
        CHEXPERT5,
        ("zeroshot", "retrieval"),
        test_split="5x200",
        val_split=None,
        train_split=None,
        multiclass=True,
        expected_files=files,
        description=description,
        split_kwargs={"5x200": split},
    )


PADCHEST_FILES = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv and the image folders"

for _ds in (
    BenchDataset(
        "chexpert",
        "chexpert",
        CHEXPERT5,
        ("zeroshot", "linear_probe", "finetune"),
        test_split="test",
        val_split="valid",
        train_split="train",
        expected_files="test_labels.csv (the 500-image expert test set) and valid.csv with their images",
        description="CheXpert expert-labelled test set (500 images), 5 classes; thresholds on valid",
        split_kwargs={"test": {"split": "test"}, "valid": {"split": "valid"}, "train": {"split": "train"}},
    ),
    _five_by_200(
        "chexpert-5x200",
        "chexpert",
        "chexpert_5x200.csv (GLoRIA's 1,000-image list, Report Impression for retrieval)",
        "CheXpert 5x200: 200 images per class, 5-way argmax accuracy (no thresholds); retrieval over the "
        "list's Report Impression texts with class-matched Hit@K / Precision@K (BenchX)",
        {"split": "5x200"},
    ),
    _five_by_200(
        "mimic-5x200",
        "mimic-cxr",
        "mimic-cxr-2.0.0-{split,metadata,chexpert}.csv.gz, files/pXX/... JPGs and the free-text reports",
        "MIMIC 5x200 (MedCLIP / BenchX recipe, derived): 200 frontal official-test images per CheXpert "
        "competition class with that class alone positive; retrieval over their reports (Hit@K, "
        "Precision@K) and 5-way argmax accuracy",
        {"split": "test", "_per_class": 200},
    ),
    BenchDataset(
        "chestxray14",
        "chestxray14",
        NIH14,
        ("zeroshot", "grounding", "linear_probe", "finetune"),
        test_split="test",
        val_split="val",
        train_split="train",
        grounding_classes=NIH_BBOX8,
        expected_files=(
            "Data_Entry_2017_v2020.csv, test_list.txt, train_val_list.txt, BBox_List_2017.csv, images/"
        ),
        description="ChestX-ray14 official test list (14 labels); 8-class bbox subset for grounding",
        split_kwargs={
            "test": {"split": "test"},
            "bbox": {"split": "bbox"},
            "train": {"split": "train_val", "_part": "train"},
            "val": {"split": "train_val", "_part": "val"},
        },
        grounding_split="bbox",
    ),
    _mavl_padchest("padchest", PADCHEST_SEEN, "PadChest, MAVL's 14 seen classes"),
    _mavl_padchest(
        "padchest-rare", PADCHEST_RARE, "PadChest, MAVL's 39 rare findings (unseen in pretraining)"
    ),
    _mavl_padchest(
        "padchest-unseen",
        PADCHEST_UNSEEN,
        "PadChest, MAVL's unseen findings (its 26 listed unseen plus the 39 rare: 60 unique)",
    ),
    BenchDataset(
        "padchest-192",
        "padchest",
        (),
        ("zeroshot",),
        test_split="test",
        val_split=None,
        train_split=None,
        expected_files="PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv (MethodLabel column) and images",
        description=(
            "PadChest as CARZero reports it: every manually annotated image (MethodLabel == Physician), all "
            "its label strings except 'normal' (192 on the official file) in alphabetical order; "
            "PadChest20 = macro AUROC over the 20 least frequent of them"
        ),
        reader_kwargs={"manual_only": True},
        split_kwargs={"test": {}},
        classes_from_reader=("normal",),
        rare_k=20,
    ),
    BenchDataset(
        "openi",
        "openi",
        OPENI18,
        ("retrieval", "zeroshot"),
        test_split="test",
        val_split=None,
        train_split=None,
        expected_files="the NLMCXR XML reports (ecgen-radiology/*.xml) and the PNG images",
        description="Open-I / IU X-ray: image-report retrieval; CARZero's 18 classes for zero-shot",
        split_kwargs={"test": {}},
    ),
    BenchDataset(
        "rsna-pneumonia",
        "rsna-pneumonia",
        ("Pneumonia",),
        ("zeroshot", "grounding", "linear_probe", "segmentation", "finetune"),
        test_split="test",
        val_split="val",
        train_split="train",
        grounding_classes=("Pneumonia",),
        expected_files="stage_2_train_labels.csv (boxes), split CSVs and the DICOM images",
        description="RSNA Pneumonia: binary classification and box grounding / box-mask segmentation",
        split_kwargs={"train": {"_part": "train"}, "val": {"_part": "val"}, "test": {"_part": "test"}},
    ),
    BenchDataset(
        "siim-acr",
        "siim-acr",
        ("Pneumothorax",),
        ("zeroshot", "grounding", "linear_probe", "segmentation", "finetune"),
        test_split="test",
        val_split="val",
        train_split="train",
        grounding_classes=("Pneumothorax",),
        expected_files="train-rle.csv (masks as RLE), split CSVs and the DICOM images",
        description="SIIM-ACR Pneumothorax: binary classification and mask grounding / segmentation",
        split_kwargs={
            s: {"split_csv": f"splits/{s}.csv", "_fallback_part": s} for s in ("train", "val", "test")
        },
    ),
    BenchDataset(
        "covidx",
        "covidx",
        ("COVID-19",),
        ("zeroshot", "linear_probe", "finetune"),
        test_split="test",
        val_split="val",
        train_split="train",
        expected_files="train/val/test split .txt files (id, filename, class, source) and the images",
        description="COVIDx CXR-2: COVID-19 positive vs negative",
        split_kwargs={  # without val.txt: a patient-level share of train.txt (stated in the JSON)
            "train": {"split": "train", "_val_of": ("train", "val")},
            "val": {"split": "train", "_val_of": ("val", "val")},
            "test": {"split": "test"},
        },
    ),
    # Extras: registered the same way, run only when their reader and files exist.
    BenchDataset(
        "vindr-cxr",
        "vindr-cxr",
        VINDR18,
        ("zeroshot", "grounding", "linear_probe", "finetune"),
        test_split="test",
        val_split="val",
        train_split="train",
        grounding_classes=VINDR18,
        expected_files="annotations_test.csv / image_labels_test.csv and the DICOM images",
        description="VinDr-CXR test set, CXR-CLIP's 18 classes",
        extra=True,
        split_kwargs={  # VinDr releases train/test only: validation = a patient share of train (stated)
            "train": {"split": "train", "_val_of": ("train", None)},
            "val": {"split": "train", "_val_of": ("val", None)},
            "test": {"split": "test"},
        },
    ),
    BenchDataset(
        "chestx-det10",
        "chestx-det10",
        CHESTXDET10,
        ("zeroshot", "grounding"),
        test_split="test",
        val_split=None,
        train_split=None,
        grounding_classes=CHESTXDET10,
        expected_files="test.json (file_name, syms, boxes) and the PNG images",
        description="ChestX-Det10: 10 classes with boxes (CARZero's pointing game)",
        extra=True,
    ),
    BenchDataset(
        "ms-cxr",
        "ms-cxr",
        MSCXR8,
        ("grounding",),
        test_split="test",
        val_split=None,
        train_split=None,
        grounding_classes=MSCXR8,
        grounding_queries="phrases",
        expected_files=f"{MS_CXR_CSV} (the release's CSV, not its COCO JSON) and the MIMIC-CXR-JPG images",
        description="MS-CXR phrase grounding (AFLoc's main localisation set)",
        extra=True,
    ),
    BenchDataset(
        "covid-r",
        "covid-rural",
        ("COVID-19",),
        ("zeroshot", "grounding"),
        test_split="test",
        val_split="val",
        train_split=None,
        grounding_classes=("COVID-19",),
        expected_files="jpgs/<stem>.jpg, pngs_masks/<stem>.png and the split CSVs",
        description="COVID-Rural (COVID-19-AR) with lesion masks",
        extra=True,
        split_kwargs={  # MAVL's split CSVs at the root; without them a patient-level 70/15/15 split
            s: {"split_csv": f"{s}.csv", "_fallback_part": s} for s in ("train", "val", "test")
        },
    ),
):
    register(_ds)

MAIN_DATASETS: tuple[str, ...] = tuple(names(include_extra=False))
