"""Runner over synthetic mirrors with the test double: readers, splits, JSONs, resuming, build, plots."""

from __future__ import annotations

import csv
import json

import pytest
from bench_doubles import BlobAdapter
from cxrvlp.bench import datasets as dsreg
from cxrvlp.bench.build import build
from cxrvlp.bench.cli import main
from cxrvlp.bench.plots import plot_all
from cxrvlp.bench.record import result_path
from cxrvlp.bench.runner import RunOptions, run_suite
from cxrvlp.bench.sources import DataSource, MethodSpec
from cxrvlp.core.errors import DatasetNotFoundError

DATASETS = ("chexpert", "rsna-pneumonia", "siim-acr", "openi", "covidx")


@pytest.fixture(scope="module")
def mirrors(tmp_path_factory):
    from cxrvlp.core.data.synthetic import write_all

    root = tmp_path_factory.mktemp("syn")
    return write_all(
        root,
        seed=0,
        scale=0.4,
        image_size=48,
        names=("chexpert", "rsna-pneumonia", "siim-acr", "openi", "covidx"),
    )


def _sources(mirrors, limit=16):
    return {
        n: DataSource(dsreg.get(n), mirrors[dsreg.get(n).reader], synthetic=True, limit=limit)
        for n in DATASETS
    }


def _spec():
    classes = sorted({c for n in DATASETS for c in dsreg.get(n).classes})
    return MethodSpec("blob", lambda: BlobAdapter(classes), "test double", "0" * 64)


@pytest.fixture(scope="module")
def suite(mirrors, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    opts = RunOptions(
        tasks=("zeroshot", "grounding", "retrieval", "linear_probe"),
        seeds=(0, 1),
        batch_size=8,
        task_options={"fractions": (0.5, 1.0)},
        stop_on_error=True,
    )
    summary = run_suite(
        [_spec(), MethodSpec("carzero", None, "", skip_reason="skipped: not implemented yet")],
        _sources(mirrors),
        out,
        opts,
    )
    return out, summary


def test_one_json_per_cell_with_provenance(suite):
    out, summary = suite
    rec = json.loads(result_path(out, "blob", "chexpert", "zeroshot", 0).read_text())
    assert rec["status"] == "ok" and rec["synthetic"] is True
    for key in (
        "prompts",
        "image_size",
        "normalisation",
        "thresholds",
        "checkpoint",
        "versions",
        "seed",
        "adapter",
    ):
        assert key in rec, key
    assert rec["prompts"]["protocol"].endswith("ours, not from the paper")
    assert rec["versions"]["torch"]
    # deterministic tasks run once, the probe once per seed
    assert not result_path(out, "blob", "chexpert", "zeroshot", 1).exists()
    assert result_path(out, "blob", "rsna-pneumonia", "linear_probe", 1).exists()
    skipped = json.loads(result_path(out, "carzero", "covidx", "zeroshot", 0).read_text())
    assert skipped["status"] == "skipped" and "not implemented" in skipped["reason"]
    statuses = {json.loads(p.read_text())["status"] for p in summary.written}
    assert statuses <= {"ok", "skipped"}


def test_readers_feed_every_task(suite):
    out, _ = suite
    for ds, task in (
        ("rsna-pneumonia", "grounding"),
        ("siim-acr", "grounding"),
        ("openi", "retrieval"),
        ("covidx", "linear_probe"),
        ("siim-acr", "zeroshot"),
    ):
        rec = json.loads(result_path(out, "blob", ds, task, 0).read_text())
        assert rec["status"] == "ok", (ds, task, rec.get("reason"))
        assert all(v is None or v == v for v in rec["metrics"].values())


def test_skip_existing_redoes_only_missing(suite, mirrors):
    out, _ = suite
    gone = result_path(out, "blob", "covidx", "zeroshot", 0)
    gone.unlink()
    kept = result_path(out, "blob", "chexpert", "zeroshot", 0)
    before = kept.stat().st_mtime_ns
    opts = RunOptions(tasks=("zeroshot",), seeds=(0,), batch_size=8, skip_existing=True, stop_on_error=True)
    summary = run_suite([_spec()], _sources(mirrors), out, opts)
    assert gone.exists() and gone in summary.written
    assert kept in summary.skipped_existing and kept.stat().st_mtime_ns == before


def test_build_csv_and_markdown_with_paper_column(suite):
    out, _ = suite
    csv_path, md_path = build(out)
    rows = list(csv.DictReader(open(csv_path)))
    assert {"ours_mean", "paper", "paper_source"} <= set(rows[0])
    md = md_path.read_text()
    assert "SYNTHETIC DATA" in md and "| ours | paper |" in md
    assert any(
        r["method"] == "carzero" and r["dataset"] == "(all)" for r in rows
    )  # one row, not one per cell
    probe = [r for r in rows if r["method"] == "blob" and r["task"] == "linear_probe" and r["metric"]]
    assert probe and any(r["n_seeds"] == "2" for r in probe)  # mean +- std over the two seeds


def test_paper_numbers_reach_the_table_only_beside_the_same_key():
    from cxrvlp.bench.build import paper_numbers, rows_from_results

    def rec(model, task="linear_probe", metric="auroc_macro@1%"):
        return {"method": "mgca", "dataset": "chexpert", "task": task, "seed": 0, "status": "ok",
                "adapter": {"model_name": model}, "metrics": {metric: 0.5}}  # fmt: skip

    paper = paper_numbers()["mgca"]["chexpert"]["linear_probe"]["auroc_macro@1%"]
    row = rows_from_results([rec("mgca-vit-b16 (official)")])[0]  # the paper's model, protocol, fraction
    assert row["paper"] == paper["value"] == 0.888 and "mgca.md" in row["paper_source"]
    tiny = rows_from_results([rec("mgca-tiny")])[0]  # a tiny synthetic model never sits next to it
    assert tiny["paper"] is None and tiny["paper_note"].startswith("no paper figure")
    assert "mgca-vit-b16" in tiny["paper_note"] and "mgca-tiny" in tiny["paper_note"]
    seg = rows_from_results(
        [{**rec("mgca-r50", "segmentation", "dice_all_images"), "dataset": "siim-acr"}]
    )[0]  # frozen-decoder 100 % Dice vs the paper's 1 % fine-tune: not the same key
    assert seg["paper"] is None and "fine-tuned" in seg["paper_note"] and "1%" in seg["paper_note"]


def test_plots_are_valid_pngs(suite):
    out, _ = suite
    paths = plot_all(out)
    names = {p.name.split("_")[0] for p in paths}
    assert {"roc", "heat", "grounding"} <= names
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_missing_root_names_dataset_and_files(tmp_path, capsys):
    src = DataSource(dsreg.get("rsna-pneumonia"), tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="rsna-pneumonia.*stage_2_train_labels.csv"):
        src.check()
    rc = main(
        [
            "run",
            "--methods",
            "mgca",
            "--datasets",
            "siim-acr",
            "--data-root",
            f"siim-acr={tmp_path / 'x'}",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and "siim-acr" in capsys.readouterr().err


def test_registry_covers_the_seven_datasets():
    assert set(dsreg.MAIN_DATASETS) >= {
        "chexpert",
        "chestxray14",
        "padchest",
        "openi",
        "rsna-pneumonia",
        "siim-acr",
        "covidx",
    }
    assert dsreg.get("chexpert").val_split != dsreg.get("chexpert").test_split
    for n in dsreg.names():
        d = dsreg.get(n)
        assert d.val_split != d.test_split and d.tasks and d.expected_files
    with pytest.raises(KeyError, match="registered twice"):
        dsreg.register(dsreg.get("chexpert"))


def test_gloria_prompt_counts():
    from cxrvlp.bench.prompts import gloria_ensemble

    counts = {c: len(gloria_ensemble(c)) for c in dsreg.CHEXPERT5}
    assert counts == {
        "Atelectasis": 210,
        "Cardiomegaly": 15,
        "Consolidation": 192,
        "Edema": 18,
        "Pleural Effusion": 54,
    }
    assert len(set(gloria_ensemble("Pleural Effusion"))) == 36
    assert "small left bilateral pleural effusion" in gloria_ensemble("Pleural Effusion")
