"""
One Optuna trial of ``python -m sb3_breakout.tune``: the plan a worker checked before anything was
opened, the objective (sample, merge into the entry, train through RL Zoo's ``ExperimentManager``,
evaluate on full games with epsilon), its progress lines on stdout (:class:`TrialProgress`), and the
sampler and pruner it runs under.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from rl_zoo3.callbacks import TrialEvalCallback
from stable_baselines3.common.callbacks import BaseCallback

from sb3_breakout import checkpoint as ckpt
from sb3_breakout import config as cfg
from sb3_breakout.search_space import Param, apply_values, without_running_reward
from sb3_breakout.study_storage import ClaimLock, StorageSpec
from sb3_breakout.train import BreakoutExperimentManager

#: Trial user attribute: the values this trial put into the entry (sampled and fixed).
HYPERPARAMS_ATTR = "hyperparams"

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "gp")
#: Python packages a sampler needs beyond Optuna's own.
SAMPLER_PACKAGES = {"cmaes": ("cmaes",), "qmc": ("scipy",), "gp": ("scipy",)}
PRUNERS = ("median", "halving", "hyperband", "nop", "none")


# ========================================================================================== trials
class TrialExperimentManager(BreakoutExperimentManager):
    """
    The training CLI's ``ExperimentManager`` for one trial: the trial's entry, its own folder
    ``<study folder>/trials/trial_<n>/`` (Monitor CSV, ``config.yml``, ``evaluations.npz``).
    """

    def __init__(self, *args: Any, trial_dir: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_path = str(trial_dir)
        self.params_path = str(trial_dir / self.env_name)


def clock(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS`` (``1 day, H:MM:SS`` past a day), rounded down to the second."""
    return str(datetime.timedelta(seconds=int(max(0.0, seconds))))


def time_left(train_s: float, steps: int, total_steps: int, eval_s: float, evals_done: int,
              evals_total: int) -> tuple[float | None, int]:
    """
    A trial's time left, in seconds, from what it took so far: training time per agent step times
    the steps left, plus the mean time of the evaluations done times the evaluations left.

    :param train_s: seconds spent training so far (evaluations not counted).
    :param steps: agent steps done; ``total_steps`` the trial's.
    :param eval_s: seconds spent in the ``evals_done`` evaluations so far; ``evals_total`` planned.
    :return: the seconds left (None before the first step), and how many of the evaluations left are
        not in it (all of them before the first one has been timed, else 0).
    """
    if steps <= 0:
        return None, max(0, evals_total - evals_done)
    seconds = train_s / steps * max(0, total_steps - steps)
    evals_left = max(0, evals_total - evals_done)
    if evals_done == 0:
        return seconds, evals_left
    return seconds + eval_s / evals_done * evals_left, 0


class TrialProgress(BaseCallback):
    """
    One trial's progress as plain lines on stdout, one line per event, each flushed and starting
    ``trial <n>:`` (several workers may write to one log): the start; the agent steps each time
    another ``1 / n_lines`` of the trial's steps is done and at least every ``every_s`` seconds
    (with the training speed, the time elapsed since training started and the time left, see
    :func:`time_left`); each evaluation when it starts (its games can take minutes) and when its
    mean score has been reported to the pruner (:meth:`evaluation_started`,
    :meth:`evaluation_done`, called by :class:`EpsilonTrialEvalCallback`).

    :param trial_number: Optuna's trial number.
    :param total_steps: agent steps of the trial (``--n-timesteps``).
    :param n_evaluations: evaluations planned in the trial.
    :param games: games per evaluation (``--eval-episodes``).
    :param n_lines: step lines per trial (10: one every 10% of the steps).
    :param every_s: seconds after which a step line is printed even if the next 10% is not done
        (300.0); 0 for none.
    :param step_lines: False: no step lines (SB3's progress bar shows the steps); the start and
        evaluation lines stay.
    """

    def __init__(self, trial_number: int, total_steps: int, n_evaluations: int, games: int,
                 n_lines: int = 10, every_s: float = 300.0, step_lines: bool = True) -> None:
        super().__init__(verbose=0)
        self.trial_number = int(trial_number)
        self.total_steps = max(1, int(total_steps))
        self.n_evaluations = int(n_evaluations)
        self.games = int(games)
        self.n_lines = max(1, int(n_lines))
        self.every_s = float(every_s)
        self.step_lines = bool(step_lines)
        self.start = time.monotonic()
        self.eval_s = 0.0
        self.evals_done = 0
        self._eval_start: float | None = None
        self._start_steps = 0
        self._part = 0
        self._last_line = self.start

    def say(self, message: str) -> None:
        """Print ``trial <n>: message``, flushed."""
        print(f"trial {self.trial_number}: {message}", flush=True)

    def _games(self, n: int) -> str:
        return f"{n} game{'s' if n != 1 else ''}"

    def _timing(self, now: float) -> str:
        elapsed = now - self.start
        steps = self.num_timesteps - self._start_steps
        seconds, untimed = time_left(elapsed - self.eval_s, steps, self.total_steps - self._start_steps,
                                     self.eval_s, self.evals_done, self.n_evaluations)
        if seconds is None:
            return f"elapsed {clock(elapsed)}"
        eta = f"ETA {clock(seconds)}"
        if untimed:
            eta += f" + {untimed} evaluation{'s' if untimed != 1 else ''}"
        return f"elapsed {clock(elapsed)}, {eta}"

    def _on_training_start(self) -> None:
        self.start = self._last_line = time.monotonic()
        self._start_steps = self.num_timesteps
        self._part = self.num_timesteps * self.n_lines // self.total_steps
        self.say(f"training {self.total_steps:,} agent steps, {self.n_evaluations} evaluation"
                 f"{'s' if self.n_evaluations != 1 else ''} of {self._games(self.games)}")

    def _on_step(self) -> bool:
        if not self.step_lines:
            return True
        now = time.monotonic()
        part = min(self.num_timesteps, self.total_steps) * self.n_lines // self.total_steps
        if part > self._part or (self.every_s > 0 and now - self._last_line >= self.every_s):
            self._part, self._last_line = max(part, self._part), now
            train_s = now - self.start - self.eval_s
            steps = self.num_timesteps - self._start_steps
            speed = f"{steps / train_s:,.0f} steps/s, " if train_s > 0 and steps > 0 else ""
            percent = min(100, 100 * self.num_timesteps // self.total_steps)
            self.say(f"step {self.num_timesteps:,}/{self.total_steps:,} ({percent}%), {speed}{self._timing(now)}")
        return True

    def evaluation_started(self, step: int) -> None:
        """An evaluation starts at agent step ``step``: say so (its games can take minutes)."""
        self._eval_start = time.monotonic()
        self.say(f"evaluating at step {step:,} ({self._games(self.games)})...")

    def evaluation_done(self, index: int, step: int, score: float, pruned: bool) -> None:
        """
        Evaluation ``index`` (Optuna's step, from 1) at agent step ``step`` ended with mean game score
        ``score``, the value reported to the pruner; ``pruned``: the pruner stops the trial.
        """
        now = time.monotonic()
        took = now - (self._eval_start if self._eval_start is not None else now)
        self._eval_start = None
        self.eval_s += took
        self.evals_done += 1
        self._last_line = now
        head = (f"evaluation {index}/{max(index, self.n_evaluations)} at step {step:,}: mean score {score:.2f} "
                f"over {self._games(self.games)} in {took:.0f} s, reported to the pruner")
        if pruned:
            self.say(f"{head}: pruned, elapsed {clock(now - self.start)}")
        else:
            self.say(f"{head}; {self._timing(now)}")


class EpsilonTrialEvalCallback(TrialEvalCallback):
    """
    RL Zoo's ``TrialEvalCallback`` (evaluate every ``eval_freq`` steps, report the mean score to the
    trial, stop when the pruner says so) playing with epsilon ``eval_eps``: SB3's ``DQN.predict``
    explores with ``model.exploration_rate`` when not deterministic, so that rate is set for the
    evaluation and restored after. Scores are Monitor scores of full games (the env is Monitor-wrapped
    under the profile's wrappers, so SB3's ``evaluate_policy`` counts whole games).

    It also stops training when the loss or the weights stop being finite (``diverged`` says why).

    :param eval_eps: probability of a random action during evaluation (0.05).
    :param progress: told when an evaluation starts and what it reported to the pruner (None: silent).
    """

    def __init__(self, eval_env: Any, trial: optuna.Trial, n_eval_episodes: int, eval_freq: int,
                 eval_eps: float = 0.05, log_path: str | None = None,
                 progress: TrialProgress | None = None) -> None:
        super().__init__(eval_env, trial, n_eval_episodes=n_eval_episodes, eval_freq=eval_freq,
                         deterministic=False, log_path=log_path)
        self.eval_eps = float(eval_eps)
        self.progress = progress
        self.scores: list[float] = []
        self.diverged: str | None = None

    def _on_step(self) -> bool:
        loss = self.logger.name_to_value.get("train/loss")
        if loss is not None and not math.isfinite(loss):
            self.diverged = f"training loss became {loss} at step {self.num_timesteps}"
            return False
        if not (self.eval_freq > 0 and self.n_calls % self.eval_freq == 0):
            return True
        if not ckpt.weights_are_finite(self.model):
            self.diverged = f"network weights are not finite at step {self.num_timesteps}"
            return False
        if self.progress is not None:
            self.progress.evaluation_started(self.num_timesteps)
        saved = self.model.exploration_rate  # type: ignore[attr-defined]
        self.model.exploration_rate = self.eval_eps  # type: ignore[attr-defined]
        try:
            keep_going = super()._on_step()  # evaluates, reports to the trial, asks the pruner
        finally:
            self.model.exploration_rate = saved  # type: ignore[attr-defined]
        self.scores.append(float(self.last_mean_reward))
        if self.progress is not None:
            self.progress.evaluation_done(self.eval_idx, self.num_timesteps, float(self.last_mean_reward),
                                          self.is_pruned)
        return keep_going


@dataclass
class Plan:
    """Everything a worker needs, checked before anything is opened or written."""

    entry: dict[str, Any]
    space: dict[str, Param]
    storage: StorageSpec
    study_name: str
    out_dir: Path
    settings: dict[str, Any]
    eval_env_kwargs: dict[str, Any]


class Objective:
    """
    One trial: sample the search space, merge the values into the entry, train and evaluate.

    :param lock: released as soon as the trial exists (it was taken to claim it).
    """

    def __init__(self, args: argparse.Namespace, plan: Plan, lock: ClaimLock) -> None:
        self.args = args
        self.plan = plan
        self.lock = lock
        self.last_number: int | None = None

    def values(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's values of every search-space parameter (fixed ones included)."""
        return {name: param.suggest(trial) for name, param in self.plan.space.items()}

    def __call__(self, trial: optuna.Trial) -> float:
        self.lock.release()
        self.last_number = trial.number
        try:
            return self.run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # recorded as FAIL by study.optimize(catch=...); the reason goes in the CSV
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:1000])
            raise

    def run(self, trial: optuna.Trial) -> float:
        """Train and evaluate ``trial``; its value is the mean score of the last evaluation."""
        values = self.values(trial)
        trial.set_user_attr(HYPERPARAMS_ATTR, values)
        entry = apply_values(self.plan.entry, values)
        args = self.args
        cfg.validate_entry(entry, args.algo)
        trial_dir = self.plan.out_dir / "trials" / f"trial_{trial.number:04d}"
        seed = args.seed + trial.number if args.seed >= 0 else int.from_bytes(os.urandom(4), "little") >> 1
        exp = TrialExperimentManager(
            args, args.algo, args.env, str(trial_dir.parent),
            n_timesteps=args.n_timesteps, eval_freq=-1, seed=seed, verbose=args.verbose, device=args.device,
            config=args.conf_file or str(cfg.default_config(args.algo)), show_progress=args.progress,
            profile=args.profile, entry=without_running_reward(entry), trial_dir=trial_dir,
        )
        model, _ = exp.setup_experiment()
        exp.eval_env_kwargs = dict(self.plan.eval_env_kwargs)
        eval_env = exp.create_envs(1, eval_env=True)
        eval_freq = max(args.n_timesteps // args.n_evaluations // exp.n_envs, 1)  # vector steps
        progress = TrialProgress(
            trial.number, args.n_timesteps, n_evaluations=-(-args.n_timesteps // exp.n_envs) // eval_freq,
            games=args.eval_episodes, every_s=args.progress_interval, step_lines=not args.progress,
        )
        evaluation = EpsilonTrialEvalCallback(
            eval_env, trial, n_eval_episodes=args.eval_episodes, eval_freq=eval_freq,
            eval_eps=args.eval_eps, log_path=str(trial_dir), progress=progress,
        )
        try:
            model.learn(args.n_timesteps, callback=[*exp.callbacks, progress, evaluation],
                        log_interval=None if args.verbose == 0 else 100)
        finally:
            model.env.close()
            eval_env.close()
        trial.set_user_attr("eval_scores", evaluation.scores)
        if evaluation.diverged:
            trial.set_user_attr("diverged", evaluation.diverged)
            raise optuna.TrialPruned(f"training diverged: {evaluation.diverged}")
        if evaluation.is_pruned:
            raise optuna.TrialPruned(f"pruned after evaluation {evaluation.eval_idx} "
                                     f"(mean score {evaluation.last_mean_reward:.2f})")
        return float(evaluation.last_mean_reward)


# ================================================================================== sampler, pruner
def make_sampler(name: str, seed: int | None, n_startup_trials: int) -> optuna.samplers.BaseSampler:
    """
    Optuna's sampler ``name``: ``tpe`` (multivariate, with the constant liar so that concurrent
    workers do not sample next to each other's running trials), ``random``, ``cmaes``, ``qmc``, ``gp``.
    """
    s = optuna.samplers
    if name == "tpe":
        return s.TPESampler(n_startup_trials=n_startup_trials, seed=seed, multivariate=True,
                            constant_liar=True)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "cmaes":
        return s.CmaEsSampler(n_startup_trials=n_startup_trials, seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        return s.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return s.GPSampler(n_startup_trials=n_startup_trials, seed=seed)
    raise cfg.ConfigError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, n_startup_trials: int, n_evaluations: int) -> optuna.pruners.BasePruner:
    """
    Optuna's pruner ``name``, stepping over evaluations: ``median`` (after ``n_startup_trials`` trials
    and the first third of the evaluations), ``halving`` (successive halving), ``hyperband``,
    ``nop``/``none``.
    """
    p = optuna.pruners
    if name == "median":
        return p.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_evaluations // 3)
    if name == "halving":
        return p.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4, min_early_stopping_rate=0)
    if name == "hyperband":
        return p.HyperbandPruner(min_resource=1, max_resource=n_evaluations, reduction_factor=3)
    if name in ("nop", "none"):
        return p.NopPruner()
    raise cfg.ConfigError(f"unknown pruner {name!r}: choose one of {', '.join(PRUNERS)}")
