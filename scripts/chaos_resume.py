"""
Kill a training run at random moments, resume it each time, and check that nothing was lost.

Trains ``python -m sb3_breakout.train`` as a subprocess (the default recipe with a small replay buffer,
a short epsilon schedule and a small ``--save-freq``, written to ``<folder>/chaos.yml``), SIGKILLs it
``--kills`` times and resumes it with ``--resume`` after each kill, until it reaches its n_timesteps.
About half of the kills (``--during-save``) land while a checkpoint is being written: the script
polls for a ``checkpoints/step_N.tmp`` folder and kills at once or a few milliseconds later; the
others land at a random agent step (watched on the running-reward line, printed every
``--log-every`` steps) plus a random delay. Then it checks, for every kill:

- every checkpoint of the run verifies (``checkpoint.verify_checkpoint``: sizes and CRC-32s);
- the resumed process starts at the checkpoint it names and its step counter goes on from there;
- the checkpoints' step counter never goes backwards and their epsilon never goes up: each equals
  the callback's schedule at its step;
- no kill lost more than ``--save-freq`` steps (plus ``train_freq - 1``: a checkpoint is written at
  the first rollout start after it is due, so with ``--save-freq`` not a multiple of ``train_freq``,
  4 here, two checkpoints can be up to ``save_freq + 3`` steps apart): the last step the killed
  process had reached (its last printed step, or the step of the checkpoint it was writing) minus
  the checkpoint it resumed from;

and at the end: the run reached n_timesteps (the final model's counter and epsilon); the Monitor CSV
has every finished game exactly once, in order (each row whole; the Monitor copy of every checkpoint
resumed from is a prefix of the final file; the rows equal the running reward's episode count).

Prints ``K kills, S survived`` (a kill survived when every check above held for it) and exits 0 when
all did, 1 otherwise (with one line per failed check), 2 when the run ended before K kills could land
(raise ``-n``).

    python scripts/chaos_resume.py --kills 3 -n 1000 --save-freq 200     # 1-2 minutes on 2 busy cores
    python scripts/chaos_resume.py --kills 10 -n 4000 --save-freq 200 --seed 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sb3_breakout import checkpoint_files as ckpt
from sb3_breakout.callbacks import LinearEpsilonCallback
from sb3_breakout.config import default_config, load_entry
from sb3_breakout.envs import ENV_ID

STEP_LINE = re.compile(r"frame count (\d+)")
RESUMED_LINE = re.compile(r"from step_(\d+): step (\d+) of (\d+)")


@dataclass
class Kill:
    """One SIGKILL and what the run had before and after it."""

    mode: str  # "during-save" or "random"
    reached: int  # lower bound of the step the killed process had reached
    mid_save: bool = False  # a .tmp checkpoint folder was left: the kill landed inside a save
    resumed_from: int = -1
    problems: list[str] = field(default_factory=list)


def model_counters(model_zip: Path) -> tuple[int, float]:
    """``num_timesteps`` and ``exploration_rate`` from an SB3 zip's ``data`` (no torch load)."""
    with zipfile.ZipFile(model_zip) as archive:
        data = json.loads(archive.read("data"))
    return int(data["num_timesteps"]), float(data["exploration_rate"])


def steps_printed(out: Path) -> list[int]:
    return [int(m) for m in STEP_LINE.findall(out.read_text())] if out.exists() else []


def monitor_rows(csv: Path) -> list[str]:
    """The game rows of a Monitor CSV (two header lines); raises ValueError on a torn row."""
    rows = csv.read_text().splitlines()[2:]
    for row in rows:
        r, length, t = row.split(",")
        float(r), int(length), float(t)
    return rows


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.folder = Path(args.folder)
        self.run_dir = self.folder / "logs" / "dqn" / f"{ENV_ID}_1"
        self.eps_kwargs = {"random_steps": args.n_timesteps // 10, "decay_steps": args.n_timesteps // 2,
                           "initial_eps": 1.0, "final_eps": 0.1}
        self.schedule = LinearEpsilonCallback(**self.eps_kwargs).schedule
        self.train_freq = int(load_entry(default_config("dqn"), ENV_ID)["train_freq"])
        self.max_loss = args.save_freq + self.train_freq - 1
        self.history: dict[int, float] = {}  # checkpoint step -> epsilon, as they appeared
        self.problems: list[str] = []

    # ---------------------------------------------------------------- processes
    def write_conf(self) -> Path:
        entry = load_entry(default_config("dqn"), ENV_ID)
        entry.update(buffer_size=self.args.buffer_size, callback=[
            {"sb3_breakout.callbacks.LinearEpsilonCallback": self.eps_kwargs},
            {"sb3_breakout.callbacks.RunningRewardCallback": {"log_every": self.args.log_every, "window": 100,
                                                              "solved_at": 40.0}},
        ])
        conf = self.folder / "chaos.yml"
        conf.write_text(yaml.safe_dump({ENV_ID: entry}))
        return conf

    def start(self, segment: int) -> tuple[subprocess.Popen, Path]:
        if segment == 0:
            args = ["-conf", str(self.write_conf()), "-f", "logs", "-n", str(self.args.n_timesteps),
                    "--seed", str(self.args.seed), "--save-freq", str(self.args.save_freq)]
        else:
            args = ["--resume", str(self.run_dir)]
        out = self.folder / f"segment_{segment}.out"
        with open(out, "w") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sb3_breakout.train", *args, "--num-threads", "1", "--no-progress"],
                cwd=self.folder, stdout=f, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return proc, out

    def checkpoints_root(self) -> Path:
        return ckpt.checkpoint_root(self.run_dir)

    def wait_kill(self, proc: subprocess.Popen, out: Path, mode: str) -> Kill | None:
        """SIGKILL ``proc`` as ``mode`` says, once the run has a checkpoint; None when it ended first."""
        target = None
        while proc.poll() is None:
            has_checkpoint = bool(ckpt.list_checkpoints(self.run_dir))
            if mode == "during-save" and has_checkpoint:
                writing = sorted(self.checkpoints_root().glob("step_*.tmp"))
                if writing:
                    time.sleep(self.rng.choice([0.0, 0.0, self.rng.uniform(0.0, 0.05)]))
                    step = int(writing[-1].name[5:-4])
                    return self.kill(proc, out, mode, step)
                time.sleep(0.002)
                continue
            if mode == "random" and has_checkpoint:
                printed = steps_printed(out)
                now = printed[-1] if printed else 0
                if target is None:
                    last = ckpt.checkpoint_step(ckpt.list_checkpoints(self.run_dir)[-1])
                    room = self.args.n_timesteps - 4 * self.args.log_every - max(now, last)
                    target = max(now, last) + self.rng.randint(1, max(1, min(2 * self.args.save_freq, room)))
                if now >= target:
                    time.sleep(self.rng.uniform(0.0, 0.5))
                    return self.kill(proc, out, mode, 0)
            time.sleep(0.05)
        return None

    def kill(self, proc: subprocess.Popen, out: Path, mode: str, saving_step: int) -> Kill:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid_save = any(self.checkpoints_root().glob("step_*.tmp"))
        printed = steps_printed(out)
        reached = max([saving_step if mid_save else 0, *printed[-1:]])
        return Kill(mode, reached, mid_save)

    # ---------------------------------------------------------------- checks
    def check_checkpoints(self, problems: list[str]) -> None:
        """Every checkpoint verifies; the step counter and epsilon never go backwards."""
        for path in ckpt.list_checkpoints(self.run_dir):
            try:
                ckpt.verify_checkpoint(path)
            except ckpt.CheckpointError as exc:
                problems.append(f"corrupt checkpoint: {exc}")
                continue
            step, eps = model_counters(path / "model.zip")
            if step != ckpt.checkpoint_step(path):
                problems.append(f"{path.name} holds step {step}")
            if abs(eps - self.schedule.value(step)) > 1e-6:
                problems.append(f"{path.name}: epsilon {eps}, the schedule says {self.schedule.value(step)}")
            self.history.setdefault(step, eps)
        steps = list(self.history)  # in the order they appeared
        if steps != sorted(steps):
            problems.append(f"the step counter went backwards: checkpoints appeared in the order {steps}")
        epsilons = [self.history[s] for s in steps]
        if any(b > a + 1e-9 for a, b in itertools.pairwise(epsilons)):
            problems.append(f"epsilon went up: {epsilons}")

    def check_resumed(self, kill: Kill, out: Path, proc: subprocess.Popen, expected: int) -> None:
        """The resumed process names the newest whole checkpoint (``expected``) and starts at its step."""
        deadline = time.time() + self.args.timeout
        while proc.poll() is None and not RESUMED_LINE.search(out.read_text()) and time.time() < deadline:
            time.sleep(0.05)
        match = RESUMED_LINE.search(out.read_text())
        if match is None:
            kill.problems.append(f"the resumed run did not start from a checkpoint: {out.read_text()[-500:]!r}")
            return
        kill.resumed_from = int(match.group(1))
        if kill.resumed_from != expected:
            kill.problems.append(
                f"resumed from step_{kill.resumed_from}, the newest whole checkpoint is step_{expected}")
        if int(match.group(2)) != kill.resumed_from:
            kill.problems.append(f"resumed from step_{kill.resumed_from} at step {match.group(2)}")
        if kill.reached - kill.resumed_from > self.max_loss:
            kill.problems.append(f"{kill.mode} kill at step >= {kill.reached} lost {kill.reached - kill.resumed_from} "
                                 f"steps (--save-freq {self.args.save_freq}, train_freq {self.train_freq})")

    def check_segment_steps(self, kill: Kill, out: Path) -> None:
        printed = steps_printed(out)
        if printed and (printed[0] <= kill.resumed_from or printed != sorted(printed)):
            kill.problems.append(f"the step counter went backwards after step_{kill.resumed_from}: {printed[:5]}")

    def check_end(self) -> None:
        model = self.run_dir / f"{ENV_ID}.zip"
        if not model.is_file():
            self.problems.append("no final model: the run did not finish")
            return
        step, eps = model_counters(model)
        if step != self.args.n_timesteps:
            self.problems.append(f"the run ended at step {step}, not {self.args.n_timesteps}")
        if abs(eps - self.schedule.value(step)) > 1e-6:
            self.problems.append(f"final epsilon {eps}, the schedule says {self.schedule.value(step)}")
        try:
            rows = monitor_rows(self.run_dir / "0.monitor.csv")
        except ValueError as exc:
            self.problems.append(f"a torn Monitor row: {exc}")
            return
        for i, prefix in enumerate(self.resume_monitors):
            if rows[: len(prefix)] != prefix:
                self.problems.append(f"the Monitor games of the checkpoint resumed after kill {i + 1} are not "
                                     "the start of the final Monitor file")
        last = ckpt.latest_valid_checkpoint(self.run_dir)[0]
        episodes = ckpt.load_state(last)["running_reward"]["episode_count"]
        copy = (last / "monitor" / "0.monitor.csv").read_text().splitlines()[2:]
        if ckpt.checkpoint_step(last) == self.args.n_timesteps and (episodes != len(rows) or copy != rows):
            self.problems.append(f"the Monitor file has {len(rows)} games, the running reward counted {episodes}")
        if len(rows) != len(set(rows)):
            self.problems.append("a game appears twice in the Monitor file")

    # ---------------------------------------------------------------- run
    def run(self) -> int:
        self.resume_monitors: list[list[str]] = []
        kills: list[Kill] = []
        modes = ["during-save" if i % 2 == 0 else "random" for i in range(self.args.kills)]
        if self.args.during_save is not None:
            n = round(self.args.during_save * self.args.kills)
            modes = ["during-save"] * n + ["random"] * (self.args.kills - n)
        self.rng.shuffle(modes)
        proc, out = self.start(0)
        for i, mode in enumerate(modes):
            kill = self.wait_kill(proc, out, mode)
            if kill is None:
                print(f"the run ended after {len(kills)} kills (status {proc.returncode}): "
                      f"raise -n for {self.args.kills} kills", file=sys.stderr)
                print(out.read_text()[-2000:], file=sys.stderr)
                return 2
            kills.append(kill)
            self.check_checkpoints(kill.problems)
            newest = ckpt.latest_valid_checkpoint(self.run_dir)[0]
            self.resume_monitors.append((newest / "monitor" / "0.monitor.csv").read_text().splitlines()[2:])
            proc, out = self.start(i + 1)
            self.check_resumed(kill, out, proc, ckpt.checkpoint_step(newest))
            print(f"kill {i + 1}: {kill.mode}, step >= {kill.reached}"
                  f"{' (inside a save)' if kill.mid_save else ''}, resumed from step_{kill.resumed_from}"
                  + (f": {'; '.join(kill.problems)}" if kill.problems else ""), flush=True)
        status = proc.wait(timeout=self.args.timeout)
        if status != 0:
            self.problems.append(f"the last segment exited {status}: {out.read_text()[-1000:]!r}")
        for i, kill in enumerate(kills):
            self.check_segment_steps(kill, self.folder / f"segment_{i + 1}.out")
        self.check_checkpoints(self.problems)
        self.check_end()
        survived = sum(not k.problems for k in kills) if not self.problems else 0
        for problem in [p for k in kills for p in k.problems] + self.problems:
            print(f"FAILED: {problem}", file=sys.stderr)
        inside = sum(k.mid_save for k in kills)
        lost = max(k.reached - k.resumed_from for k in kills)
        print(f"{len(kills)} kills ({inside} inside a checkpoint save), {survived} survived; the run reached "
              f"step {self.args.n_timesteps} in {len(kills) + 1} processes; at most {lost} steps lost to a kill "
              f"(--save-freq {self.args.save_freq})", flush=True)
        return 0 if survived == len(kills) == self.args.kills else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs (default: 5)")
    parser.add_argument("-n", "--n-timesteps", type=int, default=3000, help="agent steps of the run (default: 3000)")
    parser.add_argument("--save-freq", type=int, default=200, help="--save-freq of the run (default: 200)")
    parser.add_argument("--buffer-size", type=int, default=5000, help="replay buffer, transitions (default: 5000)")
    parser.add_argument("--log-every", type=int, default=50,
                        help="agent steps between the running-reward lines the kills watch (default: 50)")
    parser.add_argument("--during-save", type=float, default=None,
                        help="share of the kills aimed inside a checkpoint save (default: every other one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run and of the kill moments (default: 0)")
    parser.add_argument("--folder", default=None, help="work folder (default: a new temporary one, removed at the "
                        "end unless a check failed)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a process may take (default: 600)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.kills < 1 or args.n_timesteps < 4 * args.save_freq or args.save_freq < 1:
        print(f"error: need --kills >= 1 and -n >= 4 * --save-freq >= 4 (got {args.kills}, {args.n_timesteps}, "
              f"{args.save_freq})", file=sys.stderr)
        return 2
    temporary = args.folder is None
    args.folder = args.folder or tempfile.mkdtemp(prefix="chaos_resume_")
    Path(args.folder).mkdir(parents=True, exist_ok=True)
    status = Chaos(args).run()
    if temporary and status == 0:
        shutil.rmtree(args.folder, ignore_errors=True)
    elif status != 0:
        print(f"files kept in {args.folder}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
