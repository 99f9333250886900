"""Zero-shot prompt sets, label-to-text prompts and the two-images-per-study sampling rules."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from cxrvlp.core.errors import MalformedRecordError
from cxrvlp.core.text.prompts import chexpert_5x200_prompts
from cxrvlp.cxrclip.data import (
    chestxray14_text_labels,
    chexpert_text_labels,
    draw_image_pair,
    draw_text_pair,
    generate_report_from_labels,
    load_prompt_bank,
    text_sections,
)


def test_chexpert_5x200_prompts_match_the_official_generator(shared_dir):
    raw = json.loads((shared_dir / "parity" / "cxrclip" / "inputs.json").read_text())
    ours = chexpert_5x200_prompts()
    assert list(ours) == raw["zeroshot_5x200_classes"]
    assert {c: len(p) for c, p in ours.items()} == {
        "Atelectasis": 210, "Cardiomegaly": 15, "Consolidation": 192, "Edema": 18, "Pleural Effusion": 54,
    }  # fmt: skip
    assert ours == raw["zeroshot_5x200_prompts"]  # same strings, same order (duplicates kept)
    assert ours["Pleural Effusion"][0] == "left bilateral pleural effusion"


@pytest.fixture(scope="module")
def bank(shared_dir):
    return load_prompt_bank(
        shared_dir / "data" / "splits_more" / "cxr_clip" / "datasets" / "train_prompts_all.json"
    )


def test_valid_mode_prompt_report(bank):
    # spec §10 item 15: no positives -> the first 'No Finding' sentence
    assert (
        generate_report_from_labels([[], ["Edema"], []], bank, deterministic=True) == "the lungs are clear."
    )
    two = generate_report_from_labels([["Edema", "Cardiomegaly"], [], []], bank, deterministic=True)
    assert two == bank["Edema"]["pos"][0] + " " + bank["Cardiomegaly"]["pos"][0]


def test_train_mode_draws_one_sentence_per_label_in_random_order(bank):
    rng = random.Random(0)
    labels = [["Edema"], ["Pneumothorax"], ["Atelectasis"]]
    orders = set()
    for _ in range(30):
        text = generate_report_from_labels(labels, bank, rng=rng)
        parts = {
            kind: [s for s in bank[c][kind] if s and s in text]
            for c, kind in (("Edema", "pos"), ("Pneumothorax", "neg"), ("Atelectasis", "unc"))
        }
        assert all(parts.values()), text
        orders.add(tuple(sorted(range(3), key=lambda k: text.find(list(parts.values())[k][0]))))
    assert len(orders) > 1  # sentences are shuffled


def test_label_vectors_to_text_labels():
    classes = ["Edema", "Cardiomegaly", "Pneumothorax", "Fracture"]
    assert chexpert_text_labels(np.array([1, 0, -1, np.nan]), classes) == [
        ["Edema"],
        ["Cardiomegaly"],
        ["Pneumothorax"],
    ]
    pos, neg = chestxray14_text_labels(["Effusion"], rng=random.Random(0))
    assert pos == ["Pleural Effusion"] and len(neg) == 3 and "Pleural Effusion" not in neg


def test_bad_prompt_bank_names_the_class(tmp_path):
    p = tmp_path / "bank.json"
    p.write_text(json.dumps({"Edema": {"pos": ["x"], "bad": ["y"]}}))
    with pytest.raises(MalformedRecordError, match="Edema"):
        load_prompt_bank(p)


def test_text_sections_and_pairs():
    assert text_sections({"findings": "F.", "impression": "I."}) == ["F.", "I."]
    assert text_sections({"findings": "", "impression": "I."}) == ["I."]  # issue #1
    rng = random.Random(0)
    pairs = {draw_text_pair(["F.", "I."], None, rng) for _ in range(200)}
    assert pairs == {("F.", "F."), ("F.", "I."), ("I.", "F."), ("I.", "I.")}  # with replacement
    bt = {draw_text_pair(["I."], {"I.": "BT."}, rng) for _ in range(50)}
    assert bt == {("I.", "BT."), ("BT.", "I.")}


def test_image_pair_sampling_rules():
    rng = random.Random(0)
    one_view = {"PA": [3, 4, 5]}
    draws = [draw_image_pair(one_view, True, rng) for _ in range(50)]
    assert all(a != b and {a, b} <= {3, 4, 5} for a, b in draws)
    assert draw_image_pair({"PA": [7]}, True, rng) == (7, 7)  # single image: augmented twice
    assert draw_image_pair({"AP": [1, 2], "LATERAL": [3]}, False, rng) == (1, 2)  # eval: CSV order
    # >2 views, official quirk (P1): both images come from one view
    three = {"AP": [0, 1], "PA": [2, 3], "LATERAL": [4, 5]}
    groups = [{0, 1}, {2, 3}, {4, 5}]
    for _ in range(30):
        a, b = draw_image_pair(three, True, rng, "official")
        assert any({a, b} <= g for g in groups)
    for _ in range(30):
        a, b = draw_image_pair(three, True, rng, "distinct_views")
        assert not any({a, b} <= g for g in groups)
