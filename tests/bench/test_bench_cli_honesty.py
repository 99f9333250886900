"""CLI honesty: a run that evaluates nothing fails, build/plot on a wrong folder say what they expected,
every `run` option is documented, and progress stays line-based in a log file."""

from __future__ import annotations

import pytest
from cxrvlp.bench.cli import main, parser


def test_run_with_no_checkpoint_exits_non_zero(tmp_path, capsys):
    root = tmp_path / "covidx"
    root.mkdir()
    rc = main(["run", "--methods", "mgca", "--datasets", "covidx", "--data-root", f"covidx={root}",
               "--tasks", "zeroshot", "--seeds", "0", "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 3
    assert "nothing was evaluated" in err and "--checkpoint" in err


@pytest.mark.parametrize("cmd", ["build", "plot"])
def test_build_and_plot_on_a_missing_folder_say_what_they_expected(cmd, tmp_path):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--out", str(tmp_path / "nowhere")])
    assert "holds no results" in str(e.value) and "runs" in str(e.value)


def test_every_run_option_has_help_and_lists_choices():
    sub = next(a for a in parser()._actions if a.dest == "cmd").choices["run"]
    undocumented = [a.dest for a in sub._actions if a.dest != "help" and not a.help]
    assert not undocumented
    text = sub.format_help()
    assert "ms-cxr" in text and "linear_probe" in text


def test_progress_in_a_log_file_is_one_line_per_update(capsys):
    from cxrvlp.bench.inference import LogProgress

    assert list(LogProgress(range(20), "pass", 20, every_s=0.0)) == list(range(20))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "pass: 0/20 batches" and lines[-1].startswith("pass: 20/20 batches")
    assert len(lines) <= 12 and all("\r" not in ln for ln in lines)


def test_a_pass_in_a_log_file_writes_lines_not_carriage_returns(capsys):
    """Every image pass (here zero-shot scoring) reports progress as whole lines when stderr is no TTY."""
    from bench_doubles import BlobAdapter, toy_samples
    from cxrvlp.bench.inference import class_scores
    from cxrvlp.bench.prompts import prompts_for

    classes = ("Atelectasis", "Edema")
    adapter = BlobAdapter(classes)
    prompts, _ = prompts_for("toy", "toy", classes)
    class_scores(adapter, toy_samples(12, classes, 0), prompts, batch_size=2, desc="toy pass")
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[0] == "toy pass: 0/6 batches"
    assert err.splitlines()[-1].startswith("toy pass: 6/6 batches")


def test_run_options_for_fractions_intervals_and_workers():
    a = parser().parse_args(["run", "--fractions", "1,100", "--bootstrap", "0", "--workers", "2"])
    assert a.fractions == (0.01, 1.0) and a.bootstrap == 0 and a.workers == 2
