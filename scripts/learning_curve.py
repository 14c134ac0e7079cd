"""
Learning-curve evidence: train a configuration, check the greedy agent along the way, and compare the
curve with the RL Zoo's published DQN run on Breakout.

    # train (in the background with --background) and evaluate each checkpoint as it appears
    python scripts/learning_curve.py train --profile deepmind -n 500000 --seed 1 -f runs --background
    # the same with hyperparameters overridden, as sb3_breakout.train's -params (an ablation)
    python scripts/learning_curve.py train -n 200000 --seed 1 -f runs -params target_update_interval:1000
    # evaluate the checkpoints of a run still going (or done), then write the plot and the table
    python scripts/learning_curve.py follow runs/dqn/BreakoutNoFrameskip-v4_1
    python scripts/learning_curve.py report runs/dqn/BreakoutNoFrameskip-v4_1 --out docs/curves

``train`` runs ``python -m sb3_breakout.train`` with ``--save-freq`` = ``--eval-every`` (100,000),
keeping every checkpoint (~50 MB each with a replay of 1M transitions), and follows the run (at
nice 10 on one torch thread; on a 2-core machine a check still slows training while it runs): every
new checkpoint's agent plays ``--eval-games`` full games at epsilon 0.05 (the evaluation protocol of
``sb3_breakout.evaluate``, 108,000-frame cap), and the scores go to
``<run>/greedy_eval.csv``. ``report`` writes ``learning_curve.png`` (score of each training game and
its running mean over 100 games against agent steps, the reference curve dashed, the greedy checks as
points with their standard deviation, and training speed below) and ``learning_curve.md`` (our running
mean against the reference at 100k, 250k, 500k and 1M steps, whatever the run reached, and where each
running mean first passed ``--solved-at``, 40: the notebooks' "solved"); for a single
run it copies the run's Monitor CSVs and ``greedy_eval.csv`` beside them (``report <out>`` redraws it).

The references are ``docs/reference/zoo_dqn_breakout_curve.csv`` and ``zoo_qrdqn_breakout_curve.csv``:
agent steps and the mean true score of the last 100 training games of the RL Zoo's DQN and QR-DQN
(rl-trained-agents), by default; ``--reference CSV`` (repeatable) draws others.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ale_py
import numpy as np
import torch as th

from sb3_breakout import config as cfg
from sb3_breakout import evaluate as ev
from sb3_breakout import plot as pl
from sb3_breakout import runs
from sb3_breakout.atomic_write import OutputNotWritten, replace_atomically, write_text_atomically
from sb3_breakout.checkpoint_files import checkpoint_dir, checkpoint_step, list_checkpoints, saved_target
from sb3_breakout.cli import OneLineArgumentParser, check_output_folder
from sb3_breakout.envs import ENV_ID
from sb3_breakout.runlock import lock_holder

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "docs" / "reference"  # RL Zoo's curves, in the repository
#: The published curves drawn beside every run, by their label.
REFERENCES = {"RL Zoo DQN (reference)": REFERENCE_DIR / "zoo_dqn_breakout_curve.csv",
              "RL Zoo QR-DQN (reference)": REFERENCE_DIR / "zoo_qrdqn_breakout_curve.csv"}
MILESTONES = (100_000, 250_000, 500_000, 1_000_000)
GREEDY_FILE = "greedy_eval.csv"


# ----------------------------------------------------------------------------- greedy checks
def greedy_done(run_dir: Path) -> dict[int, list[float]]:
    """Greedy scores already measured, by agent step."""
    return {step: scores for step, (_, scores) in greedy_rows(run_dir).items()}


def greedy_rows(run_dir: Path) -> dict[int, tuple[float, list[float]]]:
    """
    Greedy checks by agent step: (where the point goes on the curves' x axis, scores).

    The curves' x axis counts Monitor frames / 4, like the reference (it includes the frames of the
    no-ops and FIREs of resets, ~8% more than agent steps); a check sits at the Monitor frames / 4 of
    the games its checkpoint had finished (``monitor_step``, exact up to the one game in progress).
    Rows written before that column existed take it from the checkpoint if it is still on disk, else
    sit at their agent step.
    """
    path = run_dir / GREEDY_FILE
    if not path.exists():
        return {}
    rows, line = {}, 1
    try:
        with open(path) as f:
            for line, row in enumerate(csv.DictReader(f), start=2):  # noqa: B007 (named in the error)
                step = int(row["step"])
                x = row.get("monitor_step") or monitor_step(checkpoint_dir(run_dir, step)) or step
                rows[step] = (float(x), [float(v) for v in row["scores"].split()])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, AttributeError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise cfg.ConfigError(f"{path} is damaged at line {line} ({type(exc).__name__}: {reason}): it needs the "
                              "columns step,scores (and monitor_step); repair or remove it") from None
    return rows


def monitor_step(checkpoint: Path) -> float | None:
    """Monitor frames / 4 of the games finished when ``checkpoint`` was written (its Monitor copies)."""
    try:
        return float(pl.load_run(checkpoint / "monitor").steps[-1])
    except cfg.ConfigError:  # no such checkpoint any more, or no game finished yet
        return None


def greedy_check(run_dir: Path, step: int, games: int, seed: int = 0) -> list[float]:
    """Play ``games`` full games at epsilon 0.05 with the agent of checkpoint ``step``; append to the CSV."""
    target = runs.resolve_target(str(run_dir), load_checkpoint=step)
    model = runs.load_model(target, device="cpu")
    protocol = ev.Protocol(games=games, seed=seed)
    results = ev.play_games(model, lambda: ev.make_game_env(target, protocol.max_frames, protocol.noop_max), protocol)
    scores = [r.score for r in results]
    path = run_dir / GREEDY_FILE
    earlier = path.read_text() if path.is_file() else ""
    # a file begun by an older version keeps its columns (an empty one: an older version's full disk)
    columns = next(csv.reader(io.StringIO(earlier)), None) or ["step", "monitor_step", "mean", "std", "scores"]
    x = monitor_step(checkpoint_dir(run_dir, step))
    values = dict(step=step, monitor_step="" if x is None else f"{x:.0f}", mean=f"{np.mean(scores):.2f}",
                  std=f"{np.std(scores):.2f}", scores=" ".join(f"{s:g}" for s in scores))
    rows = io.StringIO()
    writer = csv.writer(rows)
    if not earlier:
        writer.writerow(columns)
    writer.writerow([values[c] for c in columns])
    # the whole file again, renamed into place: a full disk or a kill leaves the earlier checks whole
    # (an append cut short left half a row, read back as a check with wrong scores)
    write_text_atomically(path, earlier + rows.getvalue())
    print(f"greedy check at step {step}: {np.mean(scores):.1f} ± {np.std(scores):.1f} over {games} games", flush=True)
    return scores


def evaluate_new_checkpoints(run_dir: Path, every: int, games: int) -> None:
    done = greedy_done(run_dir)
    for checkpoint in list_checkpoints(run_dir):
        step = checkpoint_step(checkpoint)
        if step % every == 0 and step not in done:
            greedy_check(run_dir, step, games)


def run_finished(run_dir: Path, said: set[int]) -> bool:
    """
    The run's training has ended for good: no process holds the run (a resume, even one with a new
    ``-n``, is training), and its last process trained all its steps or was stopped by a callback
    (solved, a game limit). A run stopped short by a signal or a crash is said once per stop and
    waited for: ``--resume`` goes on.
    """
    if lock_holder(run_dir) is not None:
        return False
    end = runs.run_end(run_dir)
    if end is not None:
        if end["reason"] != "interrupted":
            return True
        steps, target = end["steps"], end["target"]
    else:  # killed (SIGKILL, a crash), not started yet, or a run of an older version: its files say what they can
        steps, target = runs.trained_steps(run_dir)
        saved = list_checkpoints(run_dir)
        newest = checkpoint_step(saved[-1]) if saved else None
        if newest is not None and (steps is None or newest > steps):
            # killed after its last final model: --resume goes on from here, to the target its checkpoint
            # holds (a resume's -n is not written to args.yml; checkpoints of older versions do not say)
            recorded = saved_target(saved[-1])
            steps, target = newest, recorded or (target if target is not None and target > newest else None)
        elif steps is not None and (target is None or steps >= target):
            return True
    if steps is not None and steps not in said:
        said.add(steps)
        of = f" of {target:,}" if target is not None else ""
        print(f"the run stopped at step {steps:,}{of}: waiting for it to go on (python -m "
              f"sb3_breakout.train --resume {run_dir}); Ctrl-C stops following", flush=True)
    return False


def follow(run_dir: Path, every: int, games: int, process: subprocess.Popen | None = None, wait: bool = False,
           poll: float = 30.0) -> None:
    """
    Evaluate checkpoints as they appear: until ``process`` ends; with ``wait``, until the run (trained
    by another process) has trained all its steps, through interruptions and resumes; else once.
    """
    said: set[int] = set()
    while True:
        evaluate_new_checkpoints(run_dir, every, games)
        running = process.poll() is None if process is not None else wait and not run_finished(run_dir, said)
        if not running:
            break
        if process is not None:  # the trainer's end wakes the follower: its last checks start at once
            try:
                process.wait(timeout=poll)
            except subprocess.TimeoutExpired:
                pass
        else:
            time.sleep(poll)
    evaluate_new_checkpoints(run_dir, every, games)


# ------------------------------------------------------------------------------------ report
def reference_at(reference, step: int) -> float | None:
    steps = reference["steps"].to_numpy()
    if step > steps[-1] * 1.01:
        return None
    return float(np.interp(step, steps, reference["score"].to_numpy()))


def ours_at(curve: pl.RunCurve, step: int, window: int = 100) -> float | None:
    if len(curve.steps) == 0 or curve.steps[-1] < step * 0.99:
        return None
    upto = curve.until(step)
    return float(upto.running_mean(window)[-1]) if len(upto.steps) else None


def first_above(curve: pl.RunCurve, threshold: float, window: int = 100) -> tuple[float, int] | None:
    """
    Where the running mean of ``window`` training games first exceeds ``threshold`` (the notebooks'
    "solved" is > 40 over 100 games): the agent steps and the number of games by then, or None.
    Only full windows count, so a lucky first game is not "solved" (the notebooks average the
    games they have).
    """
    above = np.flatnonzero(curve.running_mean(window)[window - 1:] > threshold)
    if len(above) == 0:
        return None
    game = int(above[0]) + window - 1
    return float(curve.steps[game]), game + 1


def training_time(seconds: float) -> str:
    """``seconds`` of training as "2 h 05 min" (the Monitor's clock, the pauses between resumes left out)."""
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def solved_lines(curves: list[tuple[str, pl.RunCurve]], references, threshold: float,
                 window: int = 100) -> list[str]:
    """One sentence per run (and reference) on when its running mean first exceeded ``threshold``."""
    lines = []
    for name, curve in curves:
        hit = first_above(curve, threshold, window)
        if hit is not None:
            # The running mean lags the agent by a window of games: the next games say what the agent
            # at that point plays like (an upper bound: it keeps learning while they are played).
            after = curve.scores[hit[1]:hit[1] + window]
            nxt = "" if len(after) == 0 else (
                f"; the next {len(after)} games{'' if len(after) == window else f' (of {window})'}: "
                f"mean {after.mean():.1f}")
            lines.append(f"{name}: running mean of {window} games first above {threshold:g} at {hit[0]:,.0f} "
                         f"agent steps (game {hit[1]:,}), after {training_time(curve.seconds[hit[1] - 1])} of "
                         f"training{nxt}")
        elif len(curve.steps):
            means = curve.running_mean(window)
            best = int(np.argmax(means[window - 1:])) + window - 1 if len(means) >= window else None
            peak = "" if best is None else f" (highest: {means[best]:.1f} at {curve.steps[best]:,.0f} steps)"
            lines.append(f"{name}: running mean of {window} games not above {threshold:g} within "
                         f"{curve.steps[-1]:,.0f} agent steps{peak}")
    for label, reference in references:
        above = np.flatnonzero(reference["score"].to_numpy() > threshold)
        where = f"at {reference['steps'].to_numpy()[above[0]]:,.0f} agent steps" if len(above) else "never"
        lines.append(f"{label}: first above {threshold:g} {where}")
    return lines


def table(curves: list[tuple[str, pl.RunCurve]], references, greedy: dict[str, dict[int, list[float]]],
          solved_at: float = 40.0) -> str:
    header = "| agent steps | " + " | ".join(f"{name} (running mean of 100 games)" for name, _ in curves)
    header += "".join(f" | {label}" for label, _ in references) + " |"
    lines = [header, "|" + "---|" * (len(curves) + len(references) + 1)]
    for step in MILESTONES:
        ours = [ours_at(curve, step) for _, curve in curves]
        if all(value is None for value in ours):
            continue
        refs = [reference_at(reference, step) for _, reference in references]
        cells = ["" if v is None else f"{v:.1f}" for v in [*ours, *refs]]
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    for name, points in greedy.items():
        for step, scores in sorted(points.items()):
            lines.append(f"\nGreedy check of {name} at {step:,} steps (epsilon 0.05, full games): "
                         f"{np.mean(scores):.1f} ± {np.std(scores):.1f} over {len(scores)} games")
    lines += ["\n" + line for line in solved_lines(curves, references, solved_at)]
    return "\n".join(lines) + "\n"


def report(run_dirs: list[Path], out: Path, reference_paths: dict[str, Path], names: list[str] | None,
           solved_at: float = 40.0) -> None:
    names = names or [d.name for d in run_dirs]
    pl.check_text([("--names", name) for name in names] + [("--reference", label) for label in reference_paths])
    curves = [(name, pl.load_run(d)) for name, d in zip(names, run_dirs, strict=True)]
    references = [(label, pl.read_reference(str(path))) for label, path in reference_paths.items() if path.exists()]
    rows = {name: greedy_rows(d) for name, d in zip(names, run_dirs, strict=True)}
    greedy = {name: {step: scores for step, (_, scores) in points.items()} for name, points in rows.items()}
    on_axis = {name: {x: scores for x, scores in points.values()} for name, points in rows.items()}
    out.mkdir(parents=True, exist_ok=True)
    max_steps = max(curve.steps[-1] for _, curve in curves)
    pl.plot([(name, [curve]) for name, curve in curves], out / "learning_curve.png",
            references=references, max_steps=max_steps,
            greedy={name: points for name, points in on_axis.items() if points})
    write_text_atomically(out / "learning_curve.md", table(curves, references, greedy, solved_at))
    if len(run_dirs) == 1 and out.resolve() != run_dirs[0].resolve():  # the run's small artefacts beside them,
        for file in [*run_dirs[0].glob("*.monitor.csv"), run_dirs[0] / GREEDY_FILE]:  # so the report can be
            if file.is_file():  # made again from ``out`` alone (the model and checkpoints stay behind)
                replace_atomically(out / file.name, lambda tmp, file=file: shutil.copy2(file, tmp))
    print((out / "learning_curve.md").read_text())
    print(f"wrote {out / 'learning_curve.png'}")


# --------------------------------------------------------- report and follow: their input, checked
def check_report_command(args: argparse.Namespace) -> None:
    """Refuse bad input to ``report`` before anything is written (the runs are read by ``report``)."""
    if args.names is not None and len(args.names) != len(args.run_dirs):
        raise cfg.ConfigError(f"--names gives {len(args.names)} name(s) for {len(args.run_dirs)} run folder(s): "
                              "give one name per run folder, in the same order")
    if not math.isfinite(args.solved_at):
        raise cfg.ConfigError(f"--solved-at={args.solved_at} is not allowed: must be a finite number")
    for path in args.reference or []:
        if not path.is_file():
            raise cfg.ConfigError(f"--reference {str(path)!r} is not a file: give a CSV with columns steps,score")
    check_output_folder(args.out, "--out")
    check_report_copies(args.run_dirs, args.out)


def check_report_copies(run_dirs: list[Path], out: Path) -> None:
    """
    ``report`` of one run copies its Monitor CSVs and greedy checks into ``--out``: an ``--out`` that is
    another run's folder, or a report folder of another run, would lose that run's files. A Monitor
    CSV's first line (its ``t_start``) names its run, so a report made again into its own folder passes.
    """
    if len(run_dirs) != 1 or not out.is_dir() or out.resolve() == run_dirs[0].resolve():
        return
    if runs.config_dirs(out):
        raise cfg.ConfigError(f"--out {str(out)!r} is not allowed: it is a run folder, whose files the report's "
                              "copies would replace; give a new folder")
    ours = {file.name: first_line(file) for file in run_dirs[0].glob("*.monitor.csv")}
    for file in out.glob("*.monitor.csv"):
        if ours.get(file.name) != first_line(file):
            raise cfg.ConfigError(f"--out {str(out)!r} is not allowed: it holds {file.name} of another run "
                                  f"(not {run_dirs[0]}'s), which the report's copy would replace; give a new folder")


def first_line(file: Path) -> str:
    with open(file, errors="replace") as f:
        return f.readline()


def check_follow_command(args: argparse.Namespace) -> None:
    """Refuse bad input to ``follow`` before any game is played or line written."""
    for flag, value in (("--eval-every", args.eval_every), ("--eval-games", args.eval_games)):
        if value < 1:
            raise cfg.ConfigError(f"{flag}={value} is not allowed: must be an integer >= 1")
    if not runs.config_dirs(args.run_dir):
        raise cfg.ConfigError(f"{str(args.run_dir)!r} is not a run folder (no <env>/config.yml): give "
                              "<log>/<algo>/<env>_<id> of sb3_breakout.train")
    greedy_rows(args.run_dir)  # a damaged greedy_eval.csv is refused before a check is appended to it


# ------------------------------------------------------------------- train: its input, checked
def train_flags(args: argparse.Namespace) -> list[str]:
    """
    The flags ``train`` passes to ``python -m sb3_breakout.train``: a checkpoint at every greedy check,
    as many kept as there are checks, plus two (the checkpoints of two interrupts), so that a check that
    lags behind training (the follower runs at nice 10) finds its checkpoint.
    """
    checks = max(1, -(-args.n_timesteps // args.eval_every))
    flags = ["--algo", args.algo, "-n", str(args.n_timesteps), "--seed", str(args.seed), "-f", args.log_folder,
             "--save-freq", str(args.eval_every), "--keep-checkpoints", str(checks + 2),
             "--num-threads", str(args.num_threads), "--no-progress"]
    flags += ["--profile", args.profile] if args.profile else []
    return flags + (["-params", *args.hyperparams] if args.hyperparams else [])


def entry_steps(algo: str, profile: str | None) -> int:
    """
    ``train``'s default ``-n``: the YAML entry's ``n_timesteps``, as ``sb3_breakout.train`` takes it, so
    that both train the same run (RL Zoo's ``lin_`` learning-rate schedule decays to 0 at ``-n``).
    """
    entry = cfg.load_entry(cfg.default_config(algo), ENV_ID, profile)
    return int(float(entry.get("n_timesteps", 0)))


def check_train_command(args: argparse.Namespace) -> None:
    """
    Refuse bad input to ``train`` before anything is written or started (also with ``--background``,
    whose log would otherwise be the only place to say so): this script's own flags, then every
    check of ``sb3_breakout.train`` on the command it will run (an argparse error there exits 2 with
    one line; the rest raises a ConfigError).
    """
    from sb3_breakout import train as trainer

    if args.n_timesteps is None:
        args.n_timesteps = entry_steps(args.algo, args.profile)
    for flag, value in (("--n-timesteps", args.n_timesteps), ("--eval-every", args.eval_every),
                        ("--eval-games", args.eval_games)):
        if value < 1:
            raise cfg.ConfigError(f"{flag}={value} must be >= 1")
    trainer.prepare(trainer.build_parser().parse_args(train_flags(args)))


# -------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train, checking the greedy agent at every --eval-every steps")
    train.add_argument("--algo", default="dqn", help="as sb3_breakout.train: dqn or qrdqn (default: dqn)")
    train.add_argument("--profile", default=None, help="YAML entry (deepmind, keras, ...)")
    train.add_argument("-n", "--n-timesteps", type=int, default=None,
                       help="agent steps (default: the YAML entry's n_timesteps, as sb3_breakout.train: the "
                       "fast entries' 1M; a learning-rate schedule lin_ decays to 0 at them)")
    train.add_argument("--seed", type=int, default=1)
    train.add_argument("-f", "--log-folder", default="runs")
    train.add_argument("--num-threads", default="auto", help="as sb3_breakout.train (default: auto)")
    train.add_argument("-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE",
                       help="override the YAML entry's hyperparameters, as sb3_breakout.train "
                            "(e.g. -params target_update_interval:1000)")
    train.add_argument("--background", action="store_true", help="detach and return at once (log in <log>/*.log)")
    for p in (train, sub.add_parser("follow", help="greedy checks of a run's checkpoints, until it ends")):
        p.add_argument("--eval-every", type=int, default=100_000, help="agent steps between greedy checks")
        p.add_argument("--eval-games", type=int, default=5, help="full games per greedy check")
    sub.choices["follow"].add_argument("run_dir", type=Path)
    sub.choices["follow"].add_argument("--wait", action="store_true",
                                       help="keep polling until the run has trained all its steps "
                                            "(through interruptions and --resume)")
    rep = sub.add_parser("report", help="plot and table of one or more runs")
    rep.add_argument("run_dirs", type=Path, nargs="+")
    rep.add_argument("--names", nargs="+", help="a label per run (default: folder names)")
    rep.add_argument("--reference", type=Path, action="append", default=None,
                     help="CSV steps,score drawn beside ours, repeatable (default: RL Zoo's DQN and QR-DQN)")
    rep.add_argument("--out", type=Path, default=Path("docs/curves"))
    rep.add_argument("--solved-at", type=float, default=40.0,
                     help="running mean of 100 games counted as solved (default: 40, the notebooks')")
    args = parser.parse_args(argv)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # its banner on stderr is not an error
    try:
        if args.command == "report":
            check_report_command(args)
            refs = {path.stem: path for path in args.reference} if args.reference else REFERENCES
            report(args.run_dirs, args.out, refs, args.names, args.solved_at)
        elif args.command == "follow":
            check_follow_command(args)
            follow(args.run_dir, args.eval_every, args.eval_games, wait=args.wait)
        else:
            check_train_command(args)  # bad input: one line, exit 2, before anything is written or started
            if args.background:  # the same command, detached, without --background
                log = Path(args.log_folder) / f"learning_curve_{int(time.time())}.log"
                try:
                    log.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise cfg.ConfigError(f"log folder {args.log_folder!r} cannot be created: {exc.strerror}") from None
                argv_fg = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--background"]
                with open(log, "w") as out:
                    proc = subprocess.Popen([sys.executable, __file__, *argv_fg], stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
                print(f"started in the background (pid {proc.pid}); log: {log}")
                return 0
            command = [sys.executable, "-m", "sb3_breakout.train", *train_flags(args)]
            algo_dir = Path(args.log_folder) / args.algo
            before = set(algo_dir.glob("*_*")) if algo_dir.exists() else set()
            proc = subprocess.Popen(command)
            while not (set(algo_dir.glob("*_*")) - before if algo_dir.exists() else set()):
                if proc.poll() is not None:
                    return proc.returncode
                time.sleep(1)
            (run_dir,) = set(algo_dir.glob("*_*")) - before
            print(f"following {run_dir}", flush=True)
            # The greedy checks share the CPU with the training process started above: low priority,
            # one thread. Measured on 2 cores, a check still slows 2-thread training several times over
            # while it runs (OpenMP waits for a descheduled thread); --num-threads auto then trains on
            # 1 thread and looks again after 10,000 steps. Nice 10, not 19: beside two 1-thread runs on
            # 2 cores (the way to use such a machine) a nice-19 follower got ~1% of a core and its first
            # check of 5 games had not finished 12 minutes after its checkpoint; at nice 10 (~10% of a
            # core while it checks) the checks keep pace with training.
            os.nice(10)
            th.set_num_threads(1)
            follow(run_dir, args.eval_every, args.eval_games, process=proc)
            return proc.returncode
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OutputNotWritten as exc:  # a full disk: what was written before is whole
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
