"""train.py end to end on configs/tiny.json: exact resume after SIGKILL, fallback from a damaged
checkpoint, and one-line errors for a user's mistakes."""
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "05-training" / "train.py"
TINY = ROOT / "05-training" / "configs" / "tiny.json"


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return tiny_dataset


def train(*args, check=True):
    result = subprocess.run([sys.executable, str(TRAIN), "--no_progress", *map(str, args)],
                            capture_output=True, text=True, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr)
    return result


def losses(folder: Path) -> dict:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record["loss"] for record in map(json.loads, lines)}


def tiny_config(folder: Path, **training) -> Path:
    """configs/tiny.json with some of its `training` values changed, written into folder."""
    config = json.loads(TINY.read_text())
    config["training"].update(training)
    path = folder / "tiny_config.json"
    path.write_text(json.dumps(config))
    return path


def logged_steps(folder: Path) -> list[int]:
    """Steps of the complete metrics lines (a killed run may leave half a line)."""
    steps = []
    for line in (folder / "metrics.jsonl").read_text().split("\n")[:-1]:
        steps.append(json.loads(line)["step"])
    return steps


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_losses(dataset, tmp_path):
    max_steps = 60  # long enough that the kill, sent at the first checkpoint, lands mid-run even on a fast machine
    config = tiny_config(tmp_path, max_steps=max_steps, log_interval=1, save_interval=4)
    common = ["--model_config", config, "--dataset", dataset, "--max_steps", max_steps]
    train(*common, "--checkpoint_dir", tmp_path / "straight")
    reference = losses(tmp_path / "straight")
    assert sorted(reference) == list(range(1, max_steps + 1))

    killed = tmp_path / "killed"
    with open(tmp_path / "killed.err", "w") as errors:
        process = subprocess.Popen([sys.executable, str(TRAIN), "--no_progress", *map(str, common),
                                    "--checkpoint_dir", str(killed)], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=errors)
        deadline = time.monotonic() + 600  # a loaded machine may be slow; only the order of events matters
        while not (killed / "latest_checkpoint.pt").exists():
            assert process.poll() is None, f"the run ended before its first checkpoint:\n" \
                                           f"{(tmp_path / 'killed.err').read_text()}"
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL  # died by the signal, not by finishing
    assert max(logged_steps(killed)) < max_steps
    assert not (killed / f"ckpt_{max_steps:08d}.pt").exists()

    resumed = train("--resume", killed / "latest_checkpoint.pt")
    start = int(re.search(r"resumed .*from \S+ at step (\d+)", resumed.stderr).group(1))
    assert 4 <= start < max_steps
    assert logged_steps(killed) == list(range(1, max_steps + 1))  # the lines after the checkpoint logged once
    assert losses(killed) == reference  # every step's loss, bit for bit (JSON keeps full float precision)


def test_damaged_latest_falls_back_with_a_warning(dataset, tmp_path):
    run = tmp_path / "run"
    train("--model_config", TINY, "--dataset", dataset, "--max_steps", 6, "--save_interval", 2,
          "--checkpoint_dir", run)
    newest = run / "ckpt_00000006.pt"
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated
    resumed = train("--resume", run / "latest_checkpoint.pt", "--max_steps", 8)
    assert "warning:" in resumed.stderr and "ckpt_00000004.pt" in resumed.stderr
    assert "resumed from ckpt_00000004.pt at step 4" in resumed.stderr


@pytest.mark.parametrize("args, message", [
    (["--dataset", "/nonexistent/data"], "dataset folder /nonexistent/data does not exist"),
    (["--resume", "/nonexistent/latest_checkpoint.pt"], "does not exist"),
    (["--model_config", "/nonexistent/config.json"], "nonexistent"),
])
def test_user_mistakes_give_one_line(args, message, tmp_path):
    result = train("--checkpoint_dir", tmp_path / "x", *args, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_key_is_named(dataset, tmp_path):
    config = json.loads(TINY.read_text())
    config["model"]["n_heads"] = 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    result = train("--model_config", path, "--dataset", dataset, "--checkpoint_dir", tmp_path / "x", check=False)
    assert result.returncode == 2 and "n_heads" in result.stderr and "Traceback" not in result.stderr


def test_refuses_to_overwrite_a_run(dataset, tmp_path):
    run = tmp_path / "run"
    train("--model_config", TINY, "--dataset", dataset, "--max_steps", 6, "--checkpoint_dir", run)
    before = sorted(p.name for p in run.iterdir())
    result = train("--model_config", TINY, "--dataset", dataset, "--checkpoint_dir", run, check=False)
    assert result.returncode == 2 and "already holds checkpoints" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == before
