"""Watch a training run from its `metrics.jsonl`: loss curves, memory analysis, performance,
curriculum position and consolidation events, as a text screen (optionally refreshed while the
run goes on) or a matplotlib figure.

The trainer appends one JSON line per logged step while this reads the file, so the final line
may be half written: it is ignored until it is complete. Only numpy is needed; matplotlib is an
optional extra for `--plot`.

    python 05-training/monitor.py --checkpoint_dir checkpoints/ [--follow] [--interval 5] [--plot run.png]
    python 05-training/training_loop.py --monitor --checkpoint_dir checkpoints/
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mlot.architecture.cli import OneLineParser, UserError, positive_float, positive_int, run_command

METRICS_FILE = "metrics.jsonl"
KNOWN_LOSSES = ("loss", "loss_reconstruction", "loss_consistency", "loss_coherence")
VALIDATION_KEYS = ("val_loss", "val_span_accuracy", "coherence_score")
MEMORY_KEYS = ("working_usage", "episodic_size", "episodic_diversity", "episodic_hits",
               "semantic_size", "semantic_coherence")
UNICODE_LEVELS = " ▁▂▃▄▅▆▇█"
ASCII_LEVELS = " .:-=+*#@"


# --- reading ----------------------------------------------------------------------------------------------
def parse_metrics(text: str) -> tuple[list[dict], int]:
    """(records, malformed line count). A final line without its newline is still being written by
    the trainer, so it is left for the next read rather than counted as malformed."""
    records, malformed = [], 0
    for line in filter(str.strip, text.split("\n")[:-1]):  # after the last newline: empty or partial
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            malformed += 1
    return records, malformed


def metrics_path(checkpoint_dir) -> Path:
    """The run's metrics file, or a UserError naming what is missing."""
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise UserError(f"checkpoint directory {directory} does not exist")
    path = directory / METRICS_FILE
    if not path.is_file():
        raise UserError(f"no {METRICS_FILE} in {directory} (has a run logged a step there yet?)")
    return path


def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the records that carry a finite number under `key` (and a step)."""
    steps, values = [], []
    for record in records:
        value, step = record.get(key), record.get("step")
        if _is_number(value) and _is_number(step) and math.isfinite(value):
            steps.append(float(step))
            values.append(float(value))
    return np.array(steps), np.array(values)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def loss_keys(records: list[dict]) -> list[str]:
    """The loss terms present: the known ones in their order, then any other `loss_*`."""
    present = {key for record in records for key, value in record.items()
               if key.startswith("loss") and _is_number(value)}
    return [k for k in KNOWN_LOSSES if k in present] + sorted(present - set(KNOWN_LOSSES))


# --- analysis ---------------------------------------------------------------------------------------------
def convergence_rate(steps: np.ndarray, losses: np.ndarray, window: int) -> float | None:
    """Least-squares slope of ln(loss) against step over the last `window` points, per 1000 steps
    (-0.1 means the loss falls about 10% per 1k steps). None with fewer than two usable points."""
    keep = losses > 0
    steps, losses = steps[keep][-window:], losses[keep][-window:]
    if len(steps) < 2 or np.ptp(steps) == 0:
        return None
    centred, log_loss = steps - steps.mean(), np.log(losses)
    return 1000.0 * float(np.dot(centred, log_loss - log_loss.mean()) / np.dot(centred, centred))


def training_seconds(records: list[dict]) -> float | None:
    """Wall time of training estimated from the log: each line's tokens since the previous line
    divided by the throughput measured over that same window. None when not derivable."""
    total, previous_tokens, used = 0.0, 0.0, False
    for record in records:
        tokens, rate = record.get("tokens"), record.get("tokens_per_s")
        if not _is_number(tokens):
            continue
        if _is_number(rate) and rate > 0 and tokens >= previous_tokens:
            total += (tokens - previous_tokens) / rate
            used = True
        previous_tokens = tokens
    return total if used else None


def curriculum_history(records: list[dict]) -> list[tuple[str, int, float]]:
    """[(stage, phase, first step)] for each change of curriculum position, oldest first."""
    history = []
    for record in records:
        position = (str(record.get("curriculum_stage", "?")), record.get("curriculum_phase", -1))
        if ("curriculum_stage" in record or "curriculum_phase" in record) and \
                (not history or history[-1][:2] != position):
            history.append((*position, record.get("step", 0)))
    return history


# --- drawing ----------------------------------------------------------------------------------------------
def _resample(values: np.ndarray, width: int) -> np.ndarray:
    """At most `width` points: the mean of each of `width` equal slices of the series."""
    if len(values) <= width:
        return values
    edges = np.linspace(0, len(values), width + 1).astype(int)
    return np.array([values[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])


def sparkline(values: np.ndarray, width: int, levels: str = UNICODE_LEVELS) -> str:
    """One line, one character per slice, height scaled between the series' min and max."""
    points = _resample(values, width)
    if len(points) == 0:
        return ""
    low, high = points.min(), points.max()
    top = len(levels) - 1
    if high == low:
        return levels[top // 2] * len(points)
    index = 1 + np.round((points - low) / (high - low) * (top - 1)).astype(int)
    return "".join(levels[i] for i in index)


def block_chart(steps: np.ndarray, values: np.ndarray, width: int, height: int,
                levels: str = UNICODE_LEVELS) -> list[str]:
    """A `height`-row column chart with the value axis on the left and the step range below;
    each column is the mean of its slice, drawn in eighths of a row."""
    points = _resample(values, width)
    points = np.repeat(points, max(1, width // len(points)))  # few points: wider columns
    low, high = float(points.min()), float(points.max())
    span = high - low if high > low else 1.0
    eighths = np.round((points - low) / span * (height * 8 - 1)).astype(int) + 1  # (columns,)
    lines = []
    for row in range(height - 1, -1, -1):
        filled = np.clip(eighths - row * 8, 0, 8)
        label = f"{high:9.4g} ┤" if row == height - 1 else f"{low:9.4g} ┤" if row == 0 else " " * 9 + " │"
        if levels == ASCII_LEVELS:
            label = label.replace("┤", "|").replace("│", "|")
        lines.append(label + "".join(levels[f] for f in filled))
    start, end = f"step {steps[0]:.0f}", f"{steps[-1]:.0f}"
    lines.append(" " * 11 + start + end.rjust(max(len(points) - len(start), len(end) + 1)))
    return lines


def _fmt(value) -> str:
    if not _is_number(value):
        return "-"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 100):
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _change(first: float, last: float) -> str:
    return f"{last - first:+.3g}" if first == 0 else f"{(last - first) / abs(first) * 100:+.1f}%"


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def render(records: list[dict], run_dir, malformed: int = 0, updated: float | None = None,
           now: float | None = None, window: int = 20, width: int = 100, unicode: bool = True) -> str:
    """The monitor screen as text, at most `width` columns (`updated`: the file's mtime)."""
    levels = UNICODE_LEVELS if unicode else ASCII_LEVELS
    out = [f"MLoT-Spark monitor  {run_dir}"]
    if malformed:
        out.append(f"warning: skipped {malformed} malformed line{'s' * (malformed != 1)} in {METRICS_FILE}")
    if not records:
        out.append("no complete metrics line yet")
        return "\n".join(out)
    latest = records[-1]
    header = f"step {_fmt(latest.get('step'))}   tokens {_fmt(latest.get('tokens'))}   lines {len(records)}"
    seconds = training_seconds(records)
    out.append(header + ("" if seconds is None else f"   train time ~{_duration(seconds)}"))
    if updated is not None:
        stamp = datetime.fromtimestamp(updated, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        out.append(f"updated {stamp} ({_duration(max(0.0, (now or time.time()) - updated))} ago)")

    out += ["", "LOSSES" + " " * 22 + f"{'first':>9} {'last':>9} {'min':>9} {'change':>8}  curve"]
    for key in loss_keys(records):
        steps, values = series(records, key)
        if len(values):
            out.append(_with_curve(f"  {key:<26}{values[0]:9.4g} {values[-1]:9.4g} {values.min():9.4g} "
                                   f"{_change(values[0], values[-1]):>8}  ", values, width, levels))
    steps, values = series(records, "loss_reconstruction")
    if len(values) >= 2:
        out += ["", "  reconstruction loss"]
        out += ["  " + line for line in block_chart(steps, values, width - 14, 6, levels)]

    validation = [k for k in VALIDATION_KEYS if len(series(records, k)[1])]
    if validation:
        out += ["", "VALIDATION" + " " * 12 + f"{'last':>9} {'best':>9} {'at step':>9} {'evals':>6}  curve"]
        for key in validation:
            steps, values = series(records, key)
            best = int(np.argmin(values) if key == "val_loss" else np.argmax(values))
            out.append(_with_curve(f"  {key:<20}{values[-1]:9.4g} {values[best]:9.4g} {steps[best]:9.0f} "
                                   f"{len(values):6d}  ", values, width, levels))

    out += ["", "MEMORY" + " " * 16 + f"{'now':>9} {'trend':>9}  (trend: change over the last {window} lines)"]
    for key in MEMORY_KEYS:
        steps, values = series(records, key)
        if len(values):
            recent = values[-window:]
            out.append(_with_curve(f"  {key:<20}{_fmt(latest.get(key, values[-1])):>9} "
                                   f"{recent[-1] - recent[0]:+9.3g}  ", values, width, levels))

    out += ["", "PERFORMANCE"]
    _, rates = series(records, "tokens_per_s")
    _, rss = series(records, "rss_mb")
    steps, losses = series(records, "loss")
    rate = convergence_rate(steps, losses, window)
    if len(rates):
        out.append(f"  tokens/s      now {rates[-1]:,.0f}   mean {rates.mean():,.0f}")
    if len(rss):
        out.append(f"  RSS MB        now {rss[-1]:,.1f}   peak {rss.max():,.1f}")
    if rate is not None:
        out.append(f"  convergence   {rate:+.4f} ln(loss) per 1k steps over the last {min(window, len(losses))}"
                   f" lines (loss x{math.exp(rate):.3f} per 1k steps)")
    out.append(f"  skipped steps {_fmt(latest.get('skipped_steps', 0))}"
               + (f"   grad norm {_fmt(latest['grad_norm'])}" if _is_number(latest.get("grad_norm")) else ""))

    history = curriculum_history(records)
    if history:
        stage, phase, since = history[-1]
        out += ["", f"CURRICULUM    stage {stage}   phase {phase}   since step {_fmt(since)}"]
        if len(history) > 1:
            moves = [f"{s}/{p}@{_fmt(at)}" for s, p, at in history]
            out += _wrap(moves, width, indent=" " * 14, separator=" -> ", lead="  history     ")

    consolidation = latest.get("consolidation")
    if _is_number(latest.get("consolidations")) or isinstance(consolidation, dict):
        out += ["", f"CONSOLIDATION events {_fmt(latest.get('consolidations'))}"]
        if isinstance(consolidation, dict):
            out += _wrap([f"{k} {_fmt(v)}" for k, v in consolidation.items() if _is_number(v) and k != "events"], width)

    learning_rates = latest.get("lr")
    if isinstance(learning_rates, dict) and learning_rates:
        groups = [f"{name} {value:.3g}" for name, value in learning_rates.items() if _is_number(value)]
        out += ["", "LEARNING RATES", *_wrap(groups, width)]
    return "\n".join(piece for line in out for piece in _fold(line, width))


def _with_curve(prefix: str, values: np.ndarray, width: int, levels: str) -> str:
    """prefix, then the series' sparkline in the columns left of `width` (at least 10)."""
    return prefix + sparkline(values, max(10, width - len(prefix)), levels)


def _wrap(items: list[str], width: int, indent: str = "  ", separator: str = "   ",
          lead: str | None = None) -> list[str]:
    """Items joined by `separator` into lines of at most `width` columns, an item never split
    (`lead` opens the first line, `indent` the next ones)."""
    lines, current, on_line = [], indent if lead is None else lead, 0
    for item in items:
        if on_line and len(current) + len(separator) + len(item) > width:
            lines.append(current)
            current, on_line = indent, 0
        current += (separator if on_line else "") + item
        on_line += 1
    if on_line:
        lines.append(current)
    return lines


def _fold(line: str, width: int) -> list[str]:
    """A line longer than `width` continued on the next lines, indented under it: a screen line
    is never cut, whatever the terminal width or the length of the run's path."""
    if len(line) <= width:
        return [line.rstrip()]
    indent = " " * (len(line) - len(line.lstrip()) + 2)
    return textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False)


# --- figure -----------------------------------------------------------------------------------------------
def load_pyplot():
    """matplotlib.pyplot on a file-only backend, or the one-line install hint."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install matplotlib") from None
    return plt


def plot(records: list[dict], output) -> None:
    """One panel per loss term, then validation, memory statistics and tokens/s, saved as PNG."""
    plt = load_pyplot()
    from mlot.architecture.atomic import atomic_output

    panels = [(key, [key]) for key in loss_keys(records)]
    panels += [("validation", list(VALIDATION_KEYS)),
               ("memory: usage, diversity, coherence", ["working_usage", "episodic_diversity", "semantic_coherence"]),
               ("memory: entries and hits", ["episodic_size", "semantic_size", "episodic_hits"]),
               ("tokens/s", ["tokens_per_s"])]
    panels = [(title, keys) for title, keys in panels if any(len(series(records, k)[1]) for k in keys)]
    if not panels:
        raise UserError(f"nothing to plot: {METRICS_FILE} has no complete line yet")
    rows = (len(panels) + 1) // 2  # two columns
    figure, axes = plt.subplots(rows, 2, figsize=(11, 3 * rows), squeeze=False)
    for axis, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            steps, values = series(records, key)
            if len(values):
                axis.plot(steps, values, label=key, marker="." if len(values) < 30 else None)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if len(keys) > 1:
            axis.legend(fontsize="small")
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.tight_layout()
    with atomic_output(output, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)


# --- command ----------------------------------------------------------------------------------------------
def show_once(checkpoint_dir, window: int, plot_file=None, out=None) -> None:
    """Read the metrics now, print the screen, and draw the figure if asked."""
    out = out or sys.stdout
    path = metrics_path(checkpoint_dir)
    updated = path.stat().st_mtime
    records, malformed = parse_metrics(path.read_text(encoding="utf-8", errors="replace"))
    unicode = "utf" in (getattr(out, "encoding", None) or "utf-8").lower()
    print(render(records, checkpoint_dir, malformed, updated=updated, window=window, unicode=unicode), file=out)
    if plot_file:
        plot(records, plot_file)
        print(f"wrote {plot_file}", file=out)


def follow(checkpoint_dir, interval: float, window: int, plot_file=None, max_refreshes: int | None = None,
           out=None, sleep=time.sleep) -> None:
    """Redraw every `interval` seconds until Ctrl-C (or `max_refreshes` screens): the screen is
    cleared on a terminal, else each screen is printed as a new block."""
    out = out or sys.stdout
    clear = "\x1b[H\x1b[2J" if out.isatty() else ""
    refreshes = 0
    try:
        while max_refreshes is None or refreshes < max_refreshes:
            if refreshes:
                sleep(interval)
            out.write(clear or ("\n" if refreshes else ""))
            show_once(checkpoint_dir, window, plot_file, out)
            print(f"(refreshing every {interval:g}s, Ctrl-C to stop)", file=out, flush=True)
            refreshes += 1
    except KeyboardInterrupt:
        print(file=out)


def build_parser(monitor_flag: bool = False) -> OneLineParser:
    """The monitor's options. `monitor_flag`: also the `--monitor` of `training_loop.py --monitor`
    (the command DESIGN names), so that its --help lists every option too."""
    parser = OneLineParser(description="Show a training run's curves, memory, performance and curriculum "
                                       "(training itself is train.py).",
                           epilog=__doc__.rsplit("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    if monitor_flag:
        parser.add_argument("--monitor", action="store_true", required=True, help="show a run's progress")
    parser.add_argument("--checkpoint_dir", required=True, help="the run's directory (holds metrics.jsonl)")
    parser.add_argument("--follow", action="store_true", help="redraw while the run goes on (Ctrl-C to stop)")
    parser.add_argument("--interval", type=positive_float, default=5.0,
                        help="seconds between redraws with --follow (default: %(default)s)")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw the curves to an image (needs matplotlib)")
    parser.add_argument("--window", type=int, default=20, help="logged lines used for the convergence rate and "
                        "memory trends, at least 2 (default: %(default)s)")
    parser.add_argument("--max_refreshes", type=positive_int, default=None, help=argparse.SUPPRESS)
    return parser


def show(args) -> int:
    """The screen (and figure) the options ask for; a closed pipe (`monitor.py ... | head`) ends it quietly."""
    try:
        if args.plot:
            load_pyplot()  # fail before drawing any screen
        if args.follow:
            follow(args.checkpoint_dir, args.interval, args.window, args.plot, args.max_refreshes)
        else:
            show_once(args.checkpoint_dir, args.window, args.plot)
    except BrokenPipeError:  # the reader left, nothing to report
        sys.stdout = None
    return 0


def main(argv=None, monitor_flag: bool = False) -> int:
    parser = build_parser(monitor_flag)
    args = parser.parse_args(argv)
    if args.window < 2:
        parser.error(f"argument --window: must be >= 2, got {args.window}")
    return run_command(show, args)


if __name__ == "__main__":
    sys.exit(main())
