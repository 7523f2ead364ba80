"""Monitor: parsing a metrics file that a trainer is still writing, the screen's figures against
a hand-made run, the convergence rate against hand-computed slopes, the command's error exits,
the optional matplotlib path, and the follow loop with a refresh limit."""
import io
import json
import math
import sys

import numpy as np
import pytest

from mlot.training.monitor import (ASCII_LEVELS, convergence_rate, follow, main, parse_metrics, render, series,
                                   sparkline, training_seconds)


def record(step, **fields):
    base = {"step": step, "tokens": step * 100, "loss": 4.0 - step / 100, "loss_reconstruction": 6.0 - step / 50,
            "loss_consistency": 0.1, "loss_coherence": 0.5, "tokens_per_s": 10.0 * step / 10, "rss_mb": 100.0 + step,
            "lr": {"backbone": 1e-3, "gates": 2e-2}, "curriculum_stage": "working", "curriculum_phase": 0,
            "working_usage": 0.5, "episodic_size": 0, "episodic_diversity": 0.0, "semantic_size": 0,
            "semantic_coherence": 0.0, "episodic_hits": 0, "consolidations": 0,
            "consolidation": {"promoted": 0, "merged": 0}, "skipped_steps": 0}
    base.update(fields)
    return base


HAND_MADE_RUN = [
    record(10),
    record(20, curriculum_stage="episodic", curriculum_phase=1, val_loss=3.5, val_span_accuracy=0.25,
           coherence_score=0.4),
    record(30, curriculum_stage="episodic", curriculum_phase=1, rss_mb=115.0, episodic_size=37,
           episodic_diversity=0.625, semantic_size=5, semantic_coherence=0.8125, consolidations=4,
           consolidation={"promoted": 7, "merged": 2}, skipped_steps=3, lr={"backbone": 5e-4, "gates": 1e-2},
           extra_field_nobody_knows="ignored"),
]


def write_run(directory, records, tail=""):
    text = "".join(json.dumps(r) + "\n" for r in records) + tail
    (directory / "metrics.jsonl").write_text(text, encoding="utf-8")


def test_parse_skips_partial_last_line_and_counts_malformed_middle_lines():
    text = (json.dumps({"step": 1}) + "\n" + "{not json\n" + "[1, 2]\n" + "\n"
            + json.dumps({"step": 2}) + "\n" + '{"step": 3, "lo')
    records, malformed = parse_metrics(text)
    assert [r["step"] for r in records] == [1, 2]
    assert malformed == 2  # the broken line and the non-object line; the partial tail is not an error


def test_a_complete_final_line_without_newline_waits_for_its_newline():
    records, malformed = parse_metrics(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}))
    assert [r["step"] for r in records] == [1] and malformed == 0


def test_series_keeps_only_lines_carrying_a_finite_number():
    records = [{"step": 1, "val_loss": 2.0}, {"step": 2}, {"step": 3, "val_loss": float("nan")},
               {"step": 4, "val_loss": 1.5}, {"step": 5, "val_loss": True}]
    steps, values = series(records, "val_loss")
    assert steps.tolist() == [1, 4] and values.tolist() == [2.0, 1.5]


def test_convergence_rate_against_hand_computed_slopes():
    # ln(loss) = 0, -1, -3 at steps 0, 1000, 2000: slope = ((-1)(4/3) + 0 + (1)(-5/3)) / 2 = -1.5 per 1k
    steps = np.array([0.0, 1000.0, 2000.0])
    assert convergence_rate(steps, np.exp([0.0, -1.0, -3.0]), window=10) == pytest.approx(-1.5)
    # an exact exponential decay of 0.2% per step, after noisy early points outside the window
    steps = np.arange(0, 400, 10, dtype=float)
    losses = 5.0 * np.exp(-0.002 * steps)
    losses[:10] = [9, 1, 7, 2, 8, 3, 6, 4, 5, 9]
    assert convergence_rate(steps, losses, window=30) == pytest.approx(-2.0)
    assert convergence_rate(steps[:1], losses[:1], window=30) is None


def test_training_time_from_tokens_and_throughput():
    records = [{"tokens": 100, "tokens_per_s": 10.0}, {"tokens": 300, "tokens_per_s": 20.0}, {"step": 3}]
    assert training_seconds(records) == pytest.approx(100 / 10 + 200 / 20)
    assert training_seconds([{"step": 1}]) is None


def test_sparkline_levels_by_hand():
    assert sparkline(np.array([0.0, 0.5, 1.0]), 10, ASCII_LEVELS) == ".+@"
    assert sparkline(np.array([2.0, 2.0]), 10, ASCII_LEVELS) == "=="
    assert len(sparkline(np.arange(1000.0), 40, ASCII_LEVELS)) == 40


def test_screen_shows_the_latest_values_of_a_hand_made_run():
    screen = render(HAND_MADE_RUN, "run/", malformed=1, window=20)
    lines = screen.splitlines()
    assert all(len(line) <= 100 for line in lines)
    assert "skipped 1 malformed line in metrics.jsonl" in screen
    assert "step 30   tokens 3,000   lines 3" in screen
    loss_line = next(line for line in lines if line.strip().startswith("loss "))
    assert loss_line.split()[1:5] == ["3.9", "3.7", "3.7", "-5.1%"]  # first, last, min, (3.7-3.9)/3.9
    assert next(line for line in lines if "val_loss" in line).split()[1:5] == ["3.5", "3.5", "20", "1"]
    memory = {line.split()[0]: line.split()[1] for line in lines if line.startswith("  episodic_")
              or line.startswith("  semantic_")}
    assert memory == {"episodic_size": "37", "episodic_diversity": "0.625", "episodic_hits": "0",
                      "semantic_size": "5", "semantic_coherence": "0.8125"}
    assert "tokens/s      now 30   mean 20" in screen  # rates 10, 20, 30
    assert "RSS MB        now 115.0   peak 120.0" in screen
    assert "skipped steps 3" in screen
    assert "stage episodic   phase 1   since step 20" in screen
    assert "working/0@10 -> episodic/1@20" in screen
    assert "CONSOLIDATION events 4" in screen and "promoted 7   merged 2" in screen
    assert "backbone 0.0005   gates 0.01" in screen
    assert "extra_field_nobody_knows" not in screen


def test_long_run_screen_fits_one_hundred_columns():
    run = [record(step, loss=3.0 + math.sin(step)) for step in range(1, 2001)]
    assert max(len(line) for line in render(run, "x" * 150).splitlines()) <= 100


def test_loss_curves_fill_the_width_without_passing_it():
    run = [record(step, loss=3.0 + math.sin(step)) for step in range(1, 2001)]
    for width in (80, 100, 140):
        loss_lines = [line for line in render(run, "run/", width=width, unicode=False).splitlines()
                      if line.startswith("  loss")]
        assert len(loss_lines) == 4 and all(len(line) == width for line in loss_lines)


def test_a_long_curriculum_history_wraps_at_a_narrow_width_and_keeps_every_phase():
    stages = ["working", "episodic", "semantic", "consolidation", "transfer"]
    moves = [(stage, phase) for stage in stages for phase in range(3)]
    run = [record(10 * (i + 1), curriculum_stage=stage, curriculum_phase=phase)
           for i, (stage, phase) in enumerate(moves)]
    lines = render(run, "run/", width=60).splitlines()
    assert max(len(line) for line in lines) <= 60
    start = next(i for i, line in enumerate(lines) if line.startswith("  history"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(" " * 14))
    assert end - start >= 3  # wrapped, not cut
    shown = " -> ".join(line[14:].strip() for line in lines[start:end]).split(" -> ")
    assert shown == [f"{stage}/{phase}@{10 * (i + 1)}" for i, (stage, phase) in enumerate(moves)]


def test_a_run_path_longer_than_the_screen_is_continued_not_cut():
    path = "runs/" + "x" * 150
    lines = render(HAND_MADE_RUN, path, width=100).splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "".join(line.strip() for line in lines[:3]).startswith("MLoT-Spark monitor  " + path + "step 30 ")


def test_command_prints_the_screen_and_reports_malformed_lines(tmp_path, capsys):
    write_run(tmp_path, HAND_MADE_RUN[:2], tail="garbage\n" + json.dumps(HAND_MADE_RUN[2]) + "\n{\"step\": 4")
    assert main(["--checkpoint_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 malformed line" in out and "step 30 " in out


@pytest.mark.parametrize("make_dir", [False, True])
def test_missing_run_gives_one_error_line_and_exit_2(tmp_path, capsys, make_dir):
    directory = tmp_path / "run"
    if make_dir:
        directory.mkdir()
    assert main(["--checkpoint_dir", str(directory)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert ("no metrics.jsonl" in err) if make_dir else ("does not exist" in err)


@pytest.mark.parametrize("option, value", [("--interval", "0"), ("--interval", "soon"), ("--window", "1")])
def test_bad_value_is_one_error_line(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as stop:
        main(["--checkpoint_dir", str(tmp_path), "--follow", option, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: argument {option}: ") and err.count("\n") == 1


def test_plot_without_matplotlib_names_the_install(tmp_path, capsys, monkeypatch):
    write_run(tmp_path, HAND_MADE_RUN)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert main(["--checkpoint_dir", str(tmp_path), "--plot", str(tmp_path / "run.png")]) == 2
    assert capsys.readouterr().err == "error: --plot needs matplotlib: pip install matplotlib\n"
    assert not (tmp_path / "run.png").exists()


def test_plot_writes_a_png_when_matplotlib_is_installed(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    write_run(tmp_path, HAND_MADE_RUN)
    assert main(["--checkpoint_dir", str(tmp_path), "--plot", str(tmp_path / "run.png")]) == 0
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_follow_redraws_until_its_limit_and_clears_only_a_terminal(tmp_path):
    write_run(tmp_path, HAND_MADE_RUN)
    pauses = []
    piped = io.StringIO()
    follow(tmp_path, 2.5, 20, max_refreshes=3, out=piped, sleep=pauses.append)
    assert piped.getvalue().count("MLoT-Spark monitor") == 3 and "\x1b[" not in piped.getvalue()
    assert pauses == [2.5, 2.5]
    terminal = Terminal()
    follow(tmp_path, 1.0, 20, max_refreshes=2, out=terminal, sleep=lambda seconds: None)
    assert terminal.getvalue().count("\x1b[H\x1b[2J") == 2


def test_follow_picks_up_new_lines_and_stops_cleanly_on_ctrl_c(tmp_path):
    write_run(tmp_path, HAND_MADE_RUN[:1])

    def trainer_appends_then_user_interrupts(seconds):
        if "step 30 " in out.getvalue():
            raise KeyboardInterrupt
        write_run(tmp_path, HAND_MADE_RUN)

    out = io.StringIO()
    follow(tmp_path, 1.0, 20, out=out, sleep=trainer_appends_then_user_interrupts)
    screens = out.getvalue().split("MLoT-Spark monitor")[1:]
    assert len(screens) == 2 and "step 10 " in screens[0] and "step 30 " in screens[1]


def test_follow_through_the_command_line(tmp_path, capsys):
    write_run(tmp_path, HAND_MADE_RUN)
    assert main(["--checkpoint_dir", str(tmp_path), "--follow", "--interval", "0.01", "--max_refreshes", "2"]) == 0
    assert capsys.readouterr().out.count("MLoT-Spark monitor") == 2
