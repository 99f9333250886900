"""CheXpert as prompt reports (the paper's "M,C" recipe) on the synthetic mirror: bank, 5x200, demo."""

from __future__ import annotations

import pytest
from cxrvlp.core.data.labels import CHEXPERT_CLASSES
from cxrvlp.core.data.synthetic import write_chexpert
from cxrvlp.core.data.synthetic.prompts import PROMPT_BANK_FILE
from cxrvlp.core.errors import DatasetNotFoundError, MalformedRecordError
from cxrvlp.cxrclip.data import chexpert_5x200_patients, generate_report_from_labels, load_prompt_bank
from cxrvlp.cxrclip.registry import label_data_overrides


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory):
    return write_chexpert(tmp_path_factory.mktemp("chexpert"), 8, 4, 4, 2, seed=0, image_size=32)


def test_synthetic_bank_loads_with_the_official_reader_and_covers_every_label(chexpert):
    bank = load_prompt_bank(chexpert / PROMPT_BANK_FILE)
    assert set(bank) == set(CHEXPERT_CLASSES)
    for cls in CHEXPERT_CLASSES:
        if cls != "No Finding":
            assert all(bank[cls][k] for k in ("pos", "neg", "unc"))
            assert cls.lower() in bank[cls]["neg"][0].lower() and bank[cls]["pos"][0][0].isupper()
    text = generate_report_from_labels(
        [["Edema"], ["Pneumothorax"], ["Atelectasis"]], bank, deterministic=True
    )
    assert text == bank["Edema"]["pos"][0]  # valid mode: first positive sentence only (official)
    assert (
        generate_report_from_labels([[], ["Edema"], []], bank, deterministic=True)
        == bank["No Finding"]["pos"][0]
    )


def test_5x200_patients_from_gloria_and_medclip_lists(chexpert, tmp_path):
    medclip = chexpert_5x200_patients(chexpert / "chexpert-5x200-meta.csv")
    assert medclip and all(p.startswith("patient") for p in medclip)
    gloria = tmp_path / "chexpert_5x200.csv"
    gloria.write_text("Path,Atelectasis\nCheXpert-v1.0/train/patient00007/study1/view1_frontal.jpg,1.0\n")
    assert chexpert_5x200_patients(gloria) == {"patient00007"}
    bad = tmp_path / "bad.csv"
    bad.write_text("File,Atelectasis\nx.jpg,1.0\n")
    with pytest.raises(MalformedRecordError, match="no 'Path' or 'imgpath' column"):
        chexpert_5x200_patients(bad)
    with pytest.raises(DatasetNotFoundError):
        chexpert_5x200_patients(tmp_path / "missing.csv")


def test_label_data_overrides_only_with_bank_and_5x200_list(chexpert, tmp_path):
    ov = label_data_overrides({"chexpert": chexpert})
    assert ov == [
        f"data.chexpert_root={chexpert}",
        f"data.prompt_json={chexpert / PROMPT_BANK_FILE}",
        f"data.chexpert_5x200_csv={chexpert / 'chexpert-5x200-meta.csv'}",
    ]
    assert label_data_overrides({}) == [] and label_data_overrides({"chexpert": tmp_path}) == []


def test_demo_gives_cxrclip_the_chexpert_prompts_and_mgca_nothing(chexpert):
    from cxrvlp.bench.demo import demo_overrides

    cx = demo_overrides("cxrclip", "full", ["seed=1"], {"chexpert": chexpert})
    assert f"data.chexpert_root={chexpert}" in cx and cx[-1] == "seed=1"  # the user's overrides win (last)
    assert not any(
        o.startswith("data.chexpert_root") for o in demo_overrides("mgca", "full", (), {"chexpert": chexpert})
    )


def test_tiny_trains_with_chexpert_prompts_and_a_built_tokenizer(chexpert, tmp_path):
    """MIMIC + CheXpert prompt reports, 3 steps; the built WordPiece vocab covers the prompt sentences too."""
    import json

    import method_helpers as mh

    extra = ["max_steps=3", "batch_size=4", "log_every_steps=1", "data.synthetic_patients=10"]
    _, run = mh.train_tiny("cxrclip", tmp_path, [*extra, *label_data_overrides({"chexpert": chexpert})])
    mh.check_few_steps(run, ("i2t_loss", "t2i_loss"))
    vocab = json.loads((run / "final" / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert (
        "cardiomegaly" in vocab or "cardio" in vocab
    )  # from the bank ("No cardiomegaly."), not only reports
