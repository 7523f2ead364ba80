"""Every command as a user runs it, from the repository root: `--help` works, a bad whole number
or a missing file is one `error:` line and exit code 2 (no usage block, no traceback), a config
key train.py does not know is named; and the first command line of each README code block runs
from the root (with `--help` appended) and uses only options its command has."""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MISSING = "absent/nothing_here.file"  # joined to the test's tmp_path: never exists

# script: (a whole-number option with the arguments it needs, a missing file's arguments or None).
# A missing file is named in the error line whatever the option, so MISSING is replaced by a path.
COMMANDS = {
    "01-architecture/benchmark.py": (["--steps"], None),
    "01-architecture/demo.py": (["--steps"], None),
    "01-architecture/busy_load.py": (["--processes"], None),
    "02-memory/benchmark_retrieval.py": (["--k"], None),
    "03-tokenization/tokenize_data.py": (["--vocab_size"], ["--input", MISSING]),
    "03-tokenization/generate_corpus.py": (["--seed"], None),
    "03-tokenization/benchmark.py": (["--repeats"], ["--corpus", MISSING]),
    "03-tokenization/memory_training_corpus.py": (["--output", "x.jsonl", "--documents"], None),
    "03-tokenization/kjv_books.py": (None, None),
    "05-training/train.py": (["--max_steps"], ["--dataset", MISSING]),
    "05-training/training_loop.py": (["--monitor", "--checkpoint_dir", ".", "--window"],
                                     ["--monitor", "--checkpoint_dir", MISSING]),
    "05-training/monitor.py": (["--checkpoint_dir", ".", "--window"], ["--checkpoint_dir", MISSING]),
    "05-training/checkpointing.py": (None, ["inspect", MISSING]),
    "06-evaluation/evaluate.py": (["--checkpoint", "x.pt", "--limit"],
                                  ["--checkpoint", "x.pt", "--memory_weights", MISSING]),
    "06-evaluation/memory_benchmarks.py": (["--checkpoint", "x.pt", "--cases"], ["--checkpoint", MISSING]),
    "06-evaluation/bits_by_position.py": (["--checkpoint", "x.pt", "--max_docs"], ["--checkpoint", MISSING]),
    "06-evaluation/twin_benchmark.py": (["--checkpoint", "x.pt", "--max_docs"], None),
    "07-inference/chat_benchmark.py": (["--checkpoint", "x.pt", "--other_turns"], ["--checkpoint", MISSING]),
    "06-evaluation/benchmark.py": (["--sizes"], None),
    "07-inference/generate.py": (["--prompt", "Hi", "--max_new_tokens"], ["--prompt", "Hi", "--checkpoint", MISSING]),
    "07-inference/chat.py": (["--max_new_tokens"], ["--checkpoint", MISSING]),
    "07-inference/benchmark.py": (["--repeats"], ["--checkpoint", MISSING]),
}


def run(script: str, *args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line a user's mistake must give, with exit code 2."""
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), \
        f"exit {result.returncode}, stderr:\n{result.stderr}"
    return lines[0]


def test_every_command_script_is_listed():
    found = {str(path.relative_to(ROOT)) for path in ROOT.glob("0*/*.py")
             if '__name__ == "__main__"' in path.read_text(encoding="utf-8")}
    assert found == set(COMMANDS)


@pytest.mark.parametrize("command", [[script] for script in COMMANDS]
                         + [["05-training/checkpointing.py", "inspect"], ["05-training/checkpointing.py", "bench"]],
                         ids=" ".join)
def test_help_shows_usage_and_every_option_is_explained(command):
    result = run(*command, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: "), result.stderr
    lines = result.stdout.splitlines() + [""]
    options = [(line, following) for line, following in zip(lines, lines[1:]) if line.startswith("  -")]
    # argparse puts an option's help after two spaces on its line, or on the next line, indented
    unexplained = [line.strip() for line, following in options
                   if not re.search(r"\S {2,}\S", line.strip()) and not following.startswith(" " * 8)]
    assert options and not unexplained


@pytest.mark.parametrize("script", [script for script, (number, _) in COMMANDS.items() if number])
def test_a_bad_whole_number_is_one_error_line(script):
    *before, option = COMMANDS[script][0]
    line = one_error_line(run(script, *before, option, "abc"))
    assert option in line and "'abc'" in line


@pytest.mark.parametrize("script", [script for script, (_, missing) in COMMANDS.items() if missing])
def test_a_missing_file_is_one_error_line_naming_it(script, tmp_path):
    missing = tmp_path / MISSING
    args = [str(missing) if arg == MISSING else arg for arg in COMMANDS[script][1]]
    assert str(missing) in one_error_line(run(script, *args))


def test_train_names_an_unknown_config_key(tmp_path):
    config = json.loads((ROOT / "05-training" / "configs" / "tiny.json").read_text())
    config["training"]["learning_rat"] = 0.1
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(config))
    line = one_error_line(run("05-training/train.py", "--model_config", path, "--checkpoint_dir", tmp_path / "run"))
    assert "learning_rat" in line
    assert not (tmp_path / "run").exists()


# --- the READMEs' commands ------------------------------------------------------------------------------
READMES = [ROOT / "README.md", *sorted(ROOT.glob("0*/README.md"))]
COMMAND_LINE = re.compile(r"\bpython3? (0\d-[\w-]+/\w+\.py)\b(.*)")
SHELL_OPERATORS = {"|", "||", "&&", ";", "<", ">", ">>", "&", "2>", "2>&1"}


def readme_commands() -> list:
    """(README, script, arguments) of the first command line of each shell code block (a block not
    marked as another language) that runs a stage script, continuation lines joined."""
    commands = []
    for readme in READMES:
        blocks = re.findall(r"^```(\w*)\n(.*?)^```", readme.read_text(encoding="utf-8"), flags=re.M | re.S)
        for language, body in blocks:
            if language not in ("", "bash", "sh", "console", "shell"):
                continue
            for line in body.replace("\\\n", " ").splitlines():
                match = COMMAND_LINE.search(line)
                if match:
                    words = shlex.split(match.group(2), comments=True)
                    cut = next((i for i, word in enumerate(words) if word in SHELL_OPERATORS), len(words))
                    commands.append((readme.relative_to(ROOT).as_posix(), match.group(1), words[:cut]))
                    break
    return commands


def test_readmes_show_commands():
    shown = {readme for readme, _, _ in readme_commands()}
    assert {"README.md", "01-architecture/README.md", "05-training/README.md", "07-inference/README.md"} <= shown


@pytest.mark.parametrize("readme, script, args", readme_commands(),
                         ids=lambda value: value if isinstance(value, str) else None)
def test_readme_command_runs_from_the_root(readme, script, args):
    assert (ROOT / script).is_file(), f"{readme}: no {script}"
    result = run(script, *args, "--help")
    made_earlier = {f"error: argument {option}: no file {path} (see --help)\n" for option, path in zip(args, args[1:])}
    if result.stderr in made_earlier:  # a file an earlier step of the README writes: the rest is checked
        result = run(script, "--help")
    assert result.returncode == 0, f"{readme}: {script} {' '.join(args)}\n{result.stderr}"
    unknown = [word for word in args if word.startswith("--") and word.strip("[]") not in result.stdout]
    assert not unknown, f"{readme}: {script} has no option {unknown}"
    for word in args:  # a relative path in an example must hold from the root
        if word.startswith("../"):
            pytest.fail(f"{readme}: {script} example names {word}, which is wrong from the repository root")
