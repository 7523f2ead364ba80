"""train.py end to end on configs/tiny.json: exact resume after SIGKILL, fallback from a damaged
checkpoint, and one-line errors for a user's mistakes."""
import json
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


def test_sigkill_then_resume_gives_the_uninterrupted_losses(dataset, tmp_path):
    common = ["--model_config", TINY, "--dataset", dataset, "--max_steps", 16, "--log_interval", 1,
              "--save_interval", 3]
    train(*common, "--checkpoint_dir", tmp_path / "straight")
    reference = losses(tmp_path / "straight")
    assert sorted(reference) == list(range(1, 17))

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(TRAIN), "--no_progress", *map(str, common),
                                "--checkpoint_dir", str(killed)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "ckpt_00000006.pt").exists():
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere after step 6
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "latest_checkpoint.pt").exists()
    resumed = train("--resume", killed / "latest_checkpoint.pt")
    assert "resumed from" in resumed.stderr
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
