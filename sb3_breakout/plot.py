"""
``python -m sb3_breakout.plot``: learning curves of one or more runs from their Monitor CSVs, as a PNG.

Top panel: the score of every training game (faint dots) and its running mean over the last
``--window`` (100) games (the notebooks' "running reward"), against **agent steps**: the
cumulative Monitor length ``l`` divided by the frame skip of 4 (the Monitor counts emulator
frames). That count includes frames that are not the agent's actions: the reset no-ops and, in
the ``deepmind`` profile, the FIRE and no-op steps after each life loss, about 75 frames a game;
so it runs ahead of the model's ``num_timesteps`` by ~15% while games last ~500 frames (an
untrained agent) and by under 1% once they last 10,000. Bottom panel: training speed in agent
steps per second, from the Monitor's clock ``t`` (training time, pauses between resumes left out)
against the same agent steps.

Runs are given as folders; ``NAME=folder1,folder2,...`` makes one line named NAME of several seeds:
their mean, with a band of ± one standard deviation across the seeds, over the steps all of them
reached. ``--reference CSV`` (columns ``steps,score``, e.g.
``docs/reference/zoo_dqn_breakout_curve.csv``, RL Zoo's DQN run; given twice, also
``zoo_qrdqn_breakout_curve.csv``) is drawn as a dashed line, over the steps the runs cover: the x axis
follows the runs (``--max-steps`` sets it), so a 10M-step reference does not squeeze a 600k-step run
into the left of the figure.

The score is the Monitor's: the true game score of whole games (5 lives, raw reward), whatever the
training profile. Matplotlib's Agg backend: no window is opened.

Exit status: 0 done, 2 bad input (a one-line error naming the folder or value; nothing written).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402
from stable_baselines3.common.monitor import Monitor, get_monitor_files  # noqa: E402

from sb3_breakout import config as cfg  # noqa: E402
from sb3_breakout.atomic_write import OutputNotWritten, replace_atomically  # noqa: E402
from sb3_breakout.cli import OneLineArgumentParser, check_output_file, is_file, whole_number  # noqa: E402
from sb3_breakout.envs import FRAME_SKIP  # noqa: E402

#: Points of the common step grid on which the seeds of a group are averaged.
GRID_POINTS = 400
#: Largest --dpi: 10,000 x 8,000 pixels (matplotlib refuses 65,536; memory runs out well before).
MAX_DPI = 1000
#: the largest --window and --frame-skip (numpy and pandas take 64-bit counts; no run comes near)
MAX_WHOLE = 2**31 - 1


@dataclass
class RunCurve:
    """
    One run's games, in the order they ended.

    :param folder: the run folder.
    :param steps: agent steps at the end of each game (cumulative ``l / frame_skip``).
    :param scores: raw game scores (Monitor ``r``).
    :param seconds: training seconds at the end of each game since the run's first game began, the
        pauses between resumes left out (:func:`run_clock`).
    :param files: the Monitor file (one per parallel game) that recorded each game; None: all one file.
    """

    folder: Path
    steps: np.ndarray
    scores: np.ndarray
    seconds: np.ndarray
    files: np.ndarray | None = None

    def until(self, max_steps: float) -> RunCurve:
        """The games that ended by ``max_steps`` agent steps (running means are causal: unchanged)."""
        keep = self.steps <= max_steps
        return RunCurve(self.folder, self.steps[keep], self.scores[keep], self.seconds[keep],
                        None if self.files is None else self.files[keep])

    def running_mean(self, window: int) -> np.ndarray:
        """Mean score of the last ``window`` games (of fewer at the start, so the line starts at game 1)."""
        return pd.Series(self.scores).rolling(window, min_periods=1).mean().to_numpy()

    def speed(self, points: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """
        Agent steps per second over ``points`` equal spans of steps (fewer for short runs): the
        steps of a span divided by the wall-clock time it took, read off the Monitor's ``t``.

        A game's steps are spread over the time it was played (from the end of the game before it in
        the same Monitor file), not counted at its end: with parallel games of ~2,000 agent steps,
        counting each at its end made spans of 10,000 steps look several times faster or slower
        than they were.

        :return: the span ends (agent steps) and the speeds (agent steps/s).
        """
        lengths = np.diff(np.concatenate([[0.0], self.steps]))
        files = np.zeros(len(lengths), int) if self.files is None else self.files
        clock = np.unique(np.concatenate([[0.0], self.seconds]))  # every game's end: the sum below is linear between
        steps = np.zeros_like(clock)
        for file in np.unique(files):
            mine = files == file
            steps += np.interp(clock, np.concatenate([[0.0], self.seconds[mine]]),
                               np.concatenate([[0.0], np.cumsum(lengths[mine])]))
        edges = np.linspace(0.0, steps[-1], max(2, min(points, len(self.steps)) + 1))
        times = np.interp(edges, steps, clock)
        dt = np.diff(times)
        ok = dt > 0
        return edges[1:][ok], np.diff(edges)[ok] / dt[ok]


def read_monitor_file(path: Path) -> tuple[pd.DataFrame, float]:
    """
    One Monitor CSV as ``r, l, t`` plus ``segment``, and its start time (the header's ``t_start``).

    ``segment`` numbers the training processes that wrote the rows: 0, then one more at each row whose
    ``t`` is below the one before. A run resumed with ``sb3_breakout.train --resume`` from a checkpoint
    written before 2026-12-04 appends rows whose ``t`` restarts from 0 under the original header (SB3's
    ``Monitor(override_existing=False)``); since then the Monitor clock goes on from the checkpoint's
    (:mod:`sb3_breakout.monitor_clock`) and a run is one segment. Written here rather than using SB3's
    ``load_results``, which sorts all rows by ``t`` and would put the restarted games first:
    :func:`run_clock` joins the segments.
    """
    try:
        with open(path) as f:
            first = f.readline()
            if not first.startswith("#"):
                raise cfg.ConfigError(f"{path} is not a Monitor file (no '#{{...}}' header line)")
            header = json.loads(first[1:])
            frame = pd.read_csv(f, index_col=None)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        if isinstance(exc, cfg.ConfigError):
            raise
        raise cfg.ConfigError(f"{path} is not a readable Monitor file ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise cfg.ConfigError(f"{path} is not a Monitor file (its header line is not '#{{...}}')")
    missing = {"r", "l", "t"} - set(frame.columns)
    if missing:
        raise cfg.ConfigError(f"{path} is not a Monitor file: no column {sorted(missing)[0]!r}")
    numbers = frame[["r", "l", "t"]].apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna().any(axis=1).to_numpy()
    if bad[:-1].any():  # a half-written last row is a game being written by a run still going: left out
        row = int(np.flatnonzero(bad)[0])
        raise cfg.ConfigError(f"{path} is damaged: data row {row + 1} (line {row + 3}) is not three numbers r,l,t")
    frame = numbers[~bad].copy()
    t = frame["t"].to_numpy(dtype=float)
    frame["segment"] = np.concatenate([[0], np.cumsum(np.diff(t) < 0)])[: len(t)].astype(int)
    return frame, float(header.get("t_start", 0.0))


def run_clock(frames: Sequence[pd.DataFrame], starts: Sequence[float]) -> list[np.ndarray]:
    """
    Each Monitor file's row times as seconds of training since the run's first game began, over all
    its segments (:func:`read_monitor_file`).

    Segment 0 counts from each file's own ``t_start``. A later segment restarted ``t`` at the resume,
    from a moment no file recorded: it is put where the latest game of the segment before ended, in
    any file, with one offset for all files, so that every game of a resume comes after every game
    before it (an offset per file would interleave them). The pause is left out, and so are the
    seconds between that last game and the checkpoint: at most one game's time per resume.

    A restart is seen only where ``t`` goes down in a file: a file that recorded no game in a segment
    (a run stopped right after a resume), or a resumed game that ended later on its clock than the
    file's last game before (a resume from a checkpoint written within a game's time of the start),
    puts later games one segment off. Runs resumed since the clocks are saved have one segment.

    :param frames: the files' rows (``t`` and ``segment`` columns).
    :param starts: the files' ``t_start`` (wall-clock seconds).
    """
    start = min(starts)
    segments = max((int(f["segment"].max()) + 1 for f in frames if len(f)), default=1)
    times = [f["t"].to_numpy(dtype=float) + np.where(f["segment"].to_numpy() == 0, s - start, 0.0)
             for f, s in zip(frames, starts, strict=True)]
    ends = np.zeros(segments)
    for frame, t in zip(frames, times, strict=True):
        np.maximum.at(ends, frame["segment"].to_numpy(), t)
    offsets = np.concatenate([[0.0], np.cumsum(ends)[:-1]])
    return [t + offsets[f["segment"].to_numpy()] for f, t in zip(frames, times, strict=True)]


def load_run(folder: str | Path, frame_skip: int = FRAME_SKIP) -> RunCurve:
    """
    The games of a run folder's Monitor CSVs (``*.monitor.csv``, one per training env), merged in
    the order they ended.

    :raises cfg.ConfigError: no such folder, no Monitor file, or no finished game.
    """
    folder = Path(folder)
    if is_file(folder, "run folder"):
        raise cfg.ConfigError(f"run folder {str(folder)!r} is a file: give the folder holding its *.monitor.csv")
    if not folder.is_dir():
        raise cfg.ConfigError(f"run folder {str(folder)!r} does not exist")
    files = sorted(get_monitor_files(str(folder)))
    if not files:
        raise cfg.ConfigError(f"no Monitor files (*.{Monitor.EXT}) in {str(folder)!r}: give a run folder "
                              "written by sb3_breakout.train or rl_zoo3.train")
    frames, starts = zip(*(read_monitor_file(Path(f)) for f in files), strict=True)
    times = run_clock(frames, starts)
    data = pd.concat([f.assign(t=t, file=i) for i, (f, t) in enumerate(zip(frames, times, strict=True))],
                     ignore_index=True).sort_values("t", kind="stable")
    if data.empty:
        raise cfg.ConfigError(f"the Monitor files in {str(folder)!r} hold no finished game yet")
    return RunCurve(
        folder=folder,
        steps=np.cumsum(data["l"].to_numpy(dtype=float)) / frame_skip,
        scores=data["r"].to_numpy(dtype=float),
        seconds=data["t"].to_numpy(dtype=float),
        files=data["file"].to_numpy(),
    )


def parse_spec(spec: str) -> tuple[str, list[str]]:
    """``NAME=f1,f2`` -> (NAME, [f1, f2]); a plain folder -> (its name, [folder])."""
    if "=" in spec:
        name, _, folders = spec.partition("=")
        paths = [p for p in folders.split(",") if p]
        if not name or not paths:
            raise cfg.ConfigError(f"run spec {spec!r} is not allowed: use FOLDER or NAME=FOLDER1,FOLDER2,...")
        return name, paths
    return Path(spec.rstrip("/")).name or spec, [spec]


def read_reference(path: str) -> pd.DataFrame:
    """A reference curve: a CSV with columns ``steps`` (agent steps) and ``score``."""
    try:
        data = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise cfg.ConfigError(f"cannot read reference CSV {path!r}: {reason}") from None
    if not {"steps", "score"} <= set(data.columns):
        found = ",".join(map(str, data.columns))[:200]
        raise cfg.ConfigError(f"reference CSV {path!r} must have columns steps,score; it has {found}")
    for column in ("steps", "score"):
        if not pd.api.types.is_numeric_dtype(data[column]) or data[column].isna().any() or data.empty:
            raise cfg.ConfigError(f"reference CSV {path!r}: column {column} must hold numbers on every row")
    return data


def check_text(texts: list[tuple[str, str]]) -> None:
    """
    Titles and legend labels as matplotlib draws them: ``$...$`` is mathtext, which fails only when the
    figure is drawn; each is drawn here first, so that a bad one is refused before anything is written.

    :param texts: (what, text), e.g. ("--title", "...").
    """
    for what, text in texts:
        if text.count("$") - text.count(r"\$") < 2:  # no mathtext
            continue
        fig = plt.figure(figsize=(1, 1))
        try:
            fig.text(0, 0, text)
            fig.canvas.draw()
        except Exception as exc:
            reason = " ".join(str(exc).split())[:150]
            raise cfg.ConfigError(f"{what} {text!r} is not text matplotlib can draw (mathtext between $ signs: "
                                  f"{reason}); write \\$ for a dollar sign") from None
        finally:
            plt.close(fig)


def group_band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Mean and standard deviation of several seeds' curves, interpolated onto a common grid of agent
    steps that all of them cover.

    :param curves: ``(steps, values)`` per seed, ``steps`` increasing.
    :return: grid, mean, std (std is 0 for a single seed).
    """
    if len(curves) == 1:
        x, y = curves[0]
        return x, y, np.zeros_like(y)
    low = max(float(x[0]) for x, _ in curves)
    high = min(float(x[-1]) for x, _ in curves)
    grid = np.linspace(low, high, GRID_POINTS) if high > low else np.array([high])
    values = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, values.mean(axis=0), values.std(axis=0)


def plot(
    groups: list[tuple[str, list[RunCurve]]],
    output: Path,
    *,
    window: int = 100,
    references: list[tuple[str, pd.DataFrame]] = (),
    max_steps: float | None = None,
    title: str | None = None,
    dpi: int = 100,
    greedy: dict[str, dict[int, list[float]]] | None = None,
) -> float:
    """
    Draw the two panels and write the PNG (to a temporary name, renamed into place).

    :param references: (label, ``steps,score`` table) of published curves, drawn dashed up to the x limit.
    :param max_steps: the x limit in agent steps; None: the last step of the longest run.
    :param greedy: per group name, evaluation scores of the agent by agent step (e.g. full games at
        epsilon 0.05 every 100k steps), drawn as points with their standard deviation.
    :return: the x limit drawn, in agent steps.
    """
    if max_steps is None:
        max_steps = max((float(run.steps[-1]) for _, runs in groups for run in runs if len(run.steps)), default=1.0)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), sharex=True, height_ratios=[2, 1])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, runs) in enumerate(groups):
        color = colors[i % len(colors)]
        for run in runs:
            top.scatter(run.steps, run.scores, s=5, color=color, alpha=0.25, linewidths=0)
        x, mean, std = group_band([(run.steps, run.running_mean(window)) for run in runs])
        seeds = f" ({len(runs)} seeds, mean ± std)" if len(runs) > 1 else ""
        top.plot(x, mean, color=color, lw=1.8, label=f"{name}{seeds}")
        points = (greedy or {}).get(name)
        if points:
            steps = sorted(points)
            top.errorbar(steps, [np.mean(points[k]) for k in steps], yerr=[np.std(points[k]) for k in steps],
                         fmt="D", color=color, ms=6, capsize=3, markeredgecolor="black",
                         label=f"{name}: evaluation, epsilon 0.05 (mean ± std)")
        if len(runs) > 1:
            top.fill_between(x, mean - std, mean + std, color=color, alpha=0.25, linewidth=0)
        speeds = [curve for curve in (run.speed() for run in runs) if len(curve[0])]
        if not speeds:  # every game ended within the Monitor's time resolution
            continue
        x, mean, std = group_band(speeds)
        bottom.plot(x, mean, color=color, lw=1.5, label=name)
        if len(speeds) > 1:
            bottom.fill_between(x, mean - std, mean + std, color=color, alpha=0.25, linewidth=0)
    for (label, reference), style in zip(references, ("--", ":", "-."), strict=False):
        # only the part beside ours (one point past the limit, so the line reaches the edge), so that
        # the y axis fits our scores
        beside = reference[reference["steps"] <= max_steps]
        beyond = reference[reference["steps"] > max_steps].head(1)
        reference = pd.concat([beside, beyond])
        top.plot(reference["steps"], reference["score"], color="black", ls=style, lw=1.3, label=label)
    top.set_ylabel(f"game score (5 lives, raw)\nrunning mean of last {window} games")
    top.set_title(title or "Breakout: score of each training game (dots) and its running mean")
    top.legend(loc="upper left", fontsize="small")
    top.grid(alpha=0.3)
    bottom.set_ylabel("training speed\n(agent steps/s)")
    bottom.set_xlabel(f"agent steps ({FRAME_SKIP} emulator frames each)")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    bottom.xaxis.set_major_formatter(EngFormatter())
    bottom.set_xlim(0, max_steps)
    fig.tight_layout()
    try:
        replace_atomically(output, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)
    return max_steps


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m sb3_breakout.plot",
        description="Plot training curves (score and speed against agent steps) from runs' Monitor CSVs.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="a run folder, or NAME=FOLDER1,FOLDER2,... for one line of several seeds "
                        "(mean ± std)")
    parser.add_argument("-o", "--output", default="learning_curve.png",
                        help="PNG file (default: learning_curve.png)")
    parser.add_argument("--window", type=whole_number, default=100, help="games in the running mean (default: 100)")
    parser.add_argument("--reference", action="append", default=[], metavar="CSV",
                        help="reference curve with columns steps,score, drawn dashed up to the x limit; "
                        "may be given more than once (default: none)")
    parser.add_argument("--reference-label", action="append", default=[],
                        help="its legend, once per --reference (default: the CSV's file name)")
    parser.add_argument("--frame-skip", type=whole_number, default=FRAME_SKIP,
                        help="emulator frames per agent step, to turn Monitor lengths into steps "
                        f"(default: {FRAME_SKIP})")
    parser.add_argument("--max-steps", type=float, default=None,
                        help="x-axis limit in agent steps (default: the longest run's last step)")
    parser.add_argument("--title", default=None, help="figure title (default: a description of the panels)")
    parser.add_argument("--dpi", type=whole_number, default=100,
                        help="pixels per inch of the 10x8 inch figure (default: 100)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for name, high in (("window", MAX_WHOLE), ("frame_skip", MAX_WHOLE), ("dpi", MAX_DPI)):
            value = getattr(args, name)
            if value < 1 or (high is not None and value > high):
                most = f" and <= {high}" if high is not None else ""
                raise cfg.ConfigError(f"--{name.replace('_', '-')}={value} is not allowed: must be an integer "
                                      f">= 1{most}")
        if args.max_steps is not None and not 0 < args.max_steps < float("inf"):
            raise cfg.ConfigError(f"--max-steps={args.max_steps} is not allowed: must be a number > 0")
        output = check_output_file(args.output, overwrites=(".png",))
        groups = []
        for spec in args.runs:
            name, folders = parse_spec(spec)
            groups.append((name, [load_run(folder, args.frame_skip) for folder in folders]))
        if len(args.reference_label) > len(args.reference):
            raise cfg.ConfigError(f"--reference-label {args.reference_label[len(args.reference)]!r} has no "
                                  "--reference: give one label per reference CSV")
        labels = args.reference_label + [Path(path).stem for path in args.reference[len(args.reference_label):]]
        references = [(label, read_reference(path)) for label, path in zip(labels, args.reference, strict=True)]
        if args.max_steps is not None:  # so that the y axis fits what is shown
            groups = [(name, [run.until(args.max_steps) for run in runs]) for name, runs in groups]
            if any(len(run.steps) == 0 for _, runs in groups for run in runs):
                raise cfg.ConfigError(f"--max-steps={args.max_steps:g} is not allowed: a run has no game "
                                      "ended by then")
        check_text([("--title", args.title or "")] + [("run name", name) for name, _ in groups]
                   + [("--reference-label", label) for label in labels])
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        x_max = plot(groups, output, window=args.window, references=references, max_steps=args.max_steps,
                     title=args.title, dpi=args.dpi)
    except OutputNotWritten as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, runs in groups:
        for run in runs:
            last = run.running_mean(args.window)[-1]
            print(f"{name}: {run.folder}: {len(run.scores)} games, {run.steps[-1]:,.0f} agent steps, "
                  f"running mean {last:.2f}")
    print(f"Wrote {output} (x axis: 0 to {x_max:,.0f} agent steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
