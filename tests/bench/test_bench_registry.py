"""Every benchmark registry entry resolves to a core reader and to non-empty splits on synthetic mirrors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cxrvlp.bench import datasets as dsreg
from cxrvlp.bench.sources import DataSource
from cxrvlp.core.data import DATASETS
from cxrvlp.core.data.synthetic import write_all
from cxrvlp.core.data.synthetic.extras import EXTRA_WRITERS
from cxrvlp.core.data.synthetic.mimic_cxr import write_mimic_cxr


@pytest.fixture(scope="module")
def mirrors(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirrors")
    roots = write_all(root, seed=0, scale=0.1, image_size=32)
    for name, write in EXTRA_WRITERS.items():
        roots[name] = write(root / name, 40, 0, 32)  # enough for a 15 % derived split to hold images
    # MIMIC 5x200 draws from the official test split (10 % of patients): enough for single-class images
    roots["mimic-cxr"] = write_mimic_cxr(root / "mimic-cxr-150", 150, 0, 32)
    return roots


def _splits(ds: dsreg.BenchDataset) -> list[str]:
    out = [ds.test_split, ds.val_split, ds.train_split, ds.grounding_split]
    return list(dict.fromkeys(s for s in out if s is not None))


def test_every_entry_names_a_core_reader():
    missing = {n: dsreg.get(n).reader for n in dsreg.names() if dsreg.get(n).reader not in DATASETS}
    assert not missing, f"benchmark entries whose reader core does not register: {missing}"


@pytest.mark.parametrize("name", dsreg.names())
def test_entry_resolves_on_its_mirror(name, mirrors):
    ds = dsreg.get(name)
    assert ds.reader in mirrors, f"no synthetic mirror for reader '{ds.reader}'"
    src = DataSource(ds, mirrors[ds.reader], synthetic=True, limit=3)
    for split in _splits(ds):
        samples = src.load(split)
        assert samples, f"{name}: split '{split}' is empty on the mirror"
        # the benchmark's classes exist in the reader's class list (aliases allowed)
        dsreg.class_index(samples[0].classes, ds.grounding_classes or ds.classes, name)
    if name == "vindr-cxr":  # VinDr has no official validation split: derived, and the JSON says so
        assert {"train", "val"} <= set(src.derived) and "derived" in src.derived["val"]


def test_derived_validation_split_is_disjoint_and_sized(mirrors):
    ds = dsreg.get("vindr-cxr")
    full = DataSource(ds, mirrors["vindr-cxr"], synthetic=True)
    ids = {s: {x.meta["image_id"] for x in full.load(s)} for s in ("train", "val")}
    assert ids["train"] and ids["val"] and not ids["train"] & ids["val"]
    wide = DataSource(ds, mirrors["vindr-cxr"], synthetic=True, val_fraction=0.2)  # CXR-CLIP's 80/20
    assert "20%" in (wide.load("val") and wide.derived["val"])


def test_covidx_without_val_txt_derives_its_split(mirrors, tmp_path):
    import shutil

    root = tmp_path / "covidx"
    shutil.copytree(mirrors["covidx"], root)
    (root / "val.txt").unlink()
    src = DataSource(dsreg.get("covidx"), root, synthetic=True)
    val, train = src.load("val"), src.load("train")
    assert val and train
    assert not {s.meta.get("filename", id(s)) for s in val} & {s.meta.get("filename", -1) for s in train}
    assert "derived" in src.derived["val"]
    official = DataSource(dsreg.get("covidx"), mirrors["covidx"], synthetic=True)
    assert official.load("val") and not official.derived


def test_ms_cxr_reader_groups_phrases_per_image_and_converts_boxes(tmp_path):
    import numpy as np
    from cxrvlp.core.data import get_dataset

    (tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv").write_text(
        "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height\n"
        "d1,Pneumonia,left lower lobe pneumonia,files/p10/p10000001/s5/d1.dcm,10,20,30,40,100,100\n"
        "d1,Pleural Effusion,small right effusion,files/p10/p10000001/s5/d1.dcm,1,2,3,4,100,100\n"
        "d2,Cardiomegaly,enlarged heart,files/p10/p10000002/s6/d2.jpg,5,5,50,40,100,100\n"
    )
    ds = get_dataset("ms-cxr", tmp_path, load_images=False, mimic_root=tmp_path / "mimic")
    assert len(ds) == 2
    r = ds.records[0]
    assert r.image_path.endswith("mimic/files/p10/p10000001/s5/d1.jpg") and r.patient_id == "p10000001"
    np.testing.assert_allclose(r.boxes, [[10, 20, 40, 60], [1, 2, 4, 6]])
    assert r.box_labels == ["Pneumonia", "Pleural Effusion"]
    assert r.meta["phrases"] == ["left lower lobe pneumonia", "small right effusion"]
    assert r.labels[ds.classes.index("Pneumonia")] == 1 and r.labels.sum() == 2


def test_padchest_192_takes_its_classes_from_the_manual_subset(mirrors):
    """CARZero's PadChest: the physician-labelled rows, every label string but 'normal', alphabetically."""
    import numpy as np
    from cxrvlp.bench.tasks.base import label_matrix
    from cxrvlp.bench.tasks.classification import rare_classes

    src = DataSource(dsreg.get("padchest-192"), mirrors["padchest"], synthetic=True)
    src.resolve_classes()
    classes = src.dataset.classes
    assert classes and list(classes) == sorted(classes) and "normal" not in classes
    assert dsreg.get("padchest-192").classes == ()  # the registry entry stays data-free
    test = src.load("test")
    assert all(s.meta["MethodLabel"] == "Physician" for s in src.load("test").light())
    y = label_matrix(test, classes, "padchest-192")
    rare = rare_classes(y, classes, 3)
    pos = {c: int(np.nansum(y[:, classes.index(c)] == 1)) for c in classes}
    scorable = [c for c in classes if 0 < pos[c] < len(y)]
    assert len(rare) == min(3, len(scorable)) and max(pos[c] for c in rare) <= min(
        pos[c] for c in scorable if c not in rare
    )


def test_padchest_unseen_is_mavls_union():
    """MAVL's set(26 unseen + 39 rare): five names are in both lists, so 60 (the spec's '64' is not what
    the two lists it quotes give)."""
    union = set(dsreg.PADCHEST_UNSEEN_26) | set(dsreg.PADCHEST_RARE)
    assert set(dsreg.PADCHEST_UNSEEN) == union and len(dsreg.PADCHEST_UNSEEN) == len(union) == 60


def test_mimic_5x200_takes_single_class_images_of_the_official_test_split(mirrors):
    ds = dsreg.get("mimic-5x200")
    src = DataSource(ds, mirrors["mimic-cxr"], synthetic=True)
    test = src.load("5x200").light()
    assert test and "derived" in src.derived["5x200"] and "'test'" in src.derived["5x200"]
    cols = dsreg.class_index(test[0].classes, ds.classes, ds.name)
    for s in test:
        assert (np.asarray(s.labels)[cols] == 1.0).sum() == 1 and s.report
    small = DataSource(dsreg.get("mimic-5x200"), mirrors["mimic-cxr"], synthetic=True)
    small.dataset = dataclasses.replace(
        ds, split_kwargs={"5x200": {"split": "test", "_per_class": 1}}
    )
    assert len(small.load("5x200")) <= len(ds.classes)
