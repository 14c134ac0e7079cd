"""
``python -m sb3_breakout.train``: train DQN on Breakout from ``hyperparams/dqn.yml``.

Data flow: this CLI reads one YAML entry (:mod:`sb3_breakout.config`) and checks it, with the env, the
RAM and the log folder (:mod:`sb3_breakout.preflight`), before anything is written; RL Zoo's
``ExperimentManager`` turns it into objects (env: :mod:`sb3_breakout.envs` /
:mod:`sb3_breakout.wrappers`; learner: SB3's ``DQN`` with :class:`sb3_breakout.torch_layers.NatureCNN`;
callbacks: :mod:`sb3_breakout.callbacks`); SB3's ``learn`` runs with those callbacks plus
:class:`sb3_breakout.checkpoint.CheckpointCallback` (and
:class:`sb3_breakout.threads.AdaptiveThreadsCallback` with ``--num-threads auto``, the default); the run
is written in RL Zoo's layout ``<log>/<algo>/<env>_<id>/`` (model zip, Monitor CSV, ``<env>/config.yml``
and ``args.yml``, ``checkpoints/``), which ``python -m rl_zoo3.enjoy`` reads.

Flags follow ``rl_zoo3.train`` where they overlap. Exit status: 0 done or interrupted (a checkpoint is
written), 1 training diverged, 2 bad input (nothing written; a new run folder made before the learner
failed to build is removed again). One process writes a run folder at a time
(:mod:`sb3_breakout.runlock`): a second ``--resume`` of a folder in use is refused.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import ale_py
import numpy as np
import torch as th
import yaml
from rl_zoo3.exp_manager import ExperimentManager
from stable_baselines3.common.utils import set_random_seed

from sb3_breakout import checkpoint as ckpt
from sb3_breakout import checkpoint_files as ckpt_files
from sb3_breakout import config as cfg
from sb3_breakout import flags, monitor_clock, parallel, preflight, runlock, runs
from sb3_breakout.atomic_write import OutputNotWritten, describe_write_error, is_disk_full
from sb3_breakout.callbacks import RunningRewardCallback
from sb3_breakout.cli import OneLineArgumentParser
from sb3_breakout.envs import ENV_ID
from sb3_breakout.precision import record_choice
from sb3_breakout.threads import AdaptiveThreadsCallback


class BreakoutExperimentManager(ExperimentManager):
    """
    RL Zoo's ``ExperimentManager`` that reads the entry of a *profile* (or, when resuming, the run's
    own ``config.yml``), never rewrites a resumed run's config, and writes the final model to a
    temporary name renamed into place. (``config.yml``/``args.yml`` are written by RL Zoo, once, into
    the new run folder, where there is nothing to overwrite.)
    """

    def __init__(self, *args: Any, profile: str | None = None, resume_dir: Path | None = None,
                 entry: dict[str, Any] | None = None, run_dir: Path | None = None,
                 trained_schedule: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profile = profile
        self.entry = entry
        self.trained_schedule = trained_schedule or {}
        self.resume_dir = resume_dir
        run_dir = resume_dir if resume_dir is not None else run_dir
        if run_dir is not None:  # a resumed run (appending to its Monitor files) or a folder made for this run
            self.save_path = str(run_dir)
            self.params_path = str(run_dir / self.env_name)

    def setup_experiment(self) -> tuple[Any, dict[str, Any]] | None:
        """RL Zoo's, building or loading the learner with this package's class (``config.learner_class``)."""
        with cfg.zoo_learners():
            return super().setup_experiment()

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.entry is not None:
            hyperparams = dict(self.entry)
        else:
            hyperparams = cfg.load_entry(self.config, self.env_name.gym_id, self.profile)
            hyperparams.update(self.custom_hyperparams or {})
        if self.env_kwargs:  # --env-kwargs overrides the YAML
            hyperparams["env_kwargs"] = {**hyperparams.get("env_kwargs", {}), **self.env_kwargs}
        if self._eval_env_kwargs_args is None:  # the eval env (--eval-freq) plays the same games
            self.eval_env_kwargs = dict(hyperparams.get("env_kwargs", {}))
        # the entry's values are SB3's (sb3_breakout.parallel); a resumed run goes on with the schedule its
        # checkpoint's model trained with (runs of earlier versions had train_freq rewritten for n_envs)
        return {**hyperparams, **self.trained_schedule}, dict(sorted(hyperparams.items()))

    def create_envs(self, n_envs: int, eval_env: bool = False, no_log: bool = False):
        if self.resume_dir is not None and not eval_env:
            self.monitor_kwargs = {**self.monitor_kwargs, "override_existing": False}
        return super().create_envs(n_envs, eval_env, no_log)

    def _save_config(self, saved_hyperparams: dict[str, Any]) -> None:
        if self.resume_dir is None:
            super()._save_config(saved_hyperparams)

    def save_trained_model(self, model: Any) -> None:
        """
        The final model, written to a temporary name and renamed into place. A full disk ends the
        run with exit status 1 and one line on stderr; the previous final model, if any, stays whole
        and the run resumes from its last checkpoint.
        """
        final = Path(self.save_path) / f"{self.env_name}.zip"
        tmp = Path(self.save_path) / f".{self.env_name}.tmp.zip"
        record_choice(model)  # bf16="auto": the zip says which precision the run trained in
        try:
            model.save(tmp)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            tmp.unlink(missing_ok=True)
            kept = "the previous one is kept; " if final.exists() else ""
            print(f"error: the final model {final} was not written: {describe_write_error(exc)}; {kept}"
                  f"free some space, then: python -m sb3_breakout.train --resume {self.save_path}", file=sys.stderr)
            raise SystemExit(1) from None
        os.replace(tmp, final)
        print(f"Saved {final}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m sb3_breakout.train",
        description="Train DQN on Atari Breakout with the notebooks' recipe (RL Zoo run layout).",
    )
    parser.add_argument("--algo", default="dqn",
                        help=f"learner: {' or '.join(cfg.ALGORITHMS)} (RL Zoo's names; default: dqn)")
    parser.add_argument("--env", default=ENV_ID, help=f"environment id (default: {ENV_ID})")
    parser.add_argument(
        "--profile", default=None,
        help="YAML entry to train: 'deepmind' (the entry named by the env id, default), 'keras', "
        "or any NAME with an entry '<env>-NAME'",
    )
    parser.add_argument("-conf", "--conf-file", default=None,
                        help="hyperparameter YAML (default: hyperparams/<algo>.yml)")
    parser.add_argument("-n", "--n-timesteps", type=flags.whole_number, default=-1,
                        help="agent steps (default: the YAML's)")
    parser.add_argument(
        "-params", "--hyperparams", type=str, nargs="+", action=flags.ParamsAction, default=None,
        help="override hyperparameters, e.g. -params buffer_size:1000 learning_starts:32",
    )
    parser.add_argument("--env-kwargs", type=str, nargs="+", action=flags.ParamsAction, default=None,
                        help="keyword arguments for gym.make, e.g. --env-kwargs max_episode_steps:4000")
    parser.add_argument("--seed", type=flags.whole_number, default=-1, help="random seed (default: -1, a random one)")
    parser.add_argument("-f", "--log-folder", default="logs", help="log folder (default: logs)")
    parser.add_argument("-tb", "--tensorboard-log", default="", help="TensorBoard log folder (default: none)")
    parser.add_argument("--device", default="auto", help="PyTorch device: auto (GPU when torch sees one), cpu, cuda")
    parser.add_argument(
        "--num-threads", default="auto",
        help="torch CPU threads: auto (default: measure 1, half and all cores while training and keep the "
             "fastest, again every 50,000 steps; not bit-for-bit reproducible), N, or -1 (torch's default)",
    )
    parser.add_argument(
        "-P", "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar (default: on when stdout is a terminal)",
    )
    parser.add_argument("--save-freq", type=flags.whole_number, default=100_000,
                        help="checkpoint every N agent steps, with the replay buffer (default: 100000; <= 0: "
                        "only on SIGINT/SIGTERM)")
    parser.add_argument("--keep-checkpoints", type=int, default=2, help="checkpoints kept (default: 2)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--eval-freq", type=flags.whole_number, default=-1,
                        help="evaluate every N steps with RL Zoo's EvalCallback (default: -1, never)")
    parser.add_argument("--eval-episodes", type=int, default=5, help="games per evaluation (default: 5)")
    parser.add_argument("--log-interval", type=int, default=100,
                        help="SB3 log dump every N learning episodes (default: 100)")
    parser.add_argument("--verbose", type=int, default=0, help="SB3 verbosity (0: only the running-reward line)")
    parser.add_argument("-uuid", "--uuid", action="store_true", help="append a unique id to the run folder")
    return parser


def read_run_file(path: Path, resume: str, loader: type = yaml.SafeLoader) -> dict[str, Any]:
    """
    A run's ``config.yml`` or ``args.yml`` as a dict. ``args.yml`` needs ``yaml.UnsafeLoader``: RL Zoo
    writes it as a python OrderedDict; ``config.yml`` is plain YAML and is read with the safe loader.
    """
    if not path.is_file():
        raise cfg.ConfigError(f"--resume {resume!r} is not a run folder: {path} is missing")
    try:
        with open(path) as f:
            content = yaml.load(f, Loader=loader)
        return dict(content or {})
    except (yaml.YAMLError, OSError, TypeError, ValueError) as exc:
        reason = str(exc).replace("\n", " ")
        raise cfg.ConfigError(f"--resume {resume!r}: {path} is damaged ({type(exc).__name__}: {reason})") from None


#: settings a resumed run takes from its ``args.yml`` unless given again on the command line
RESUMED_ARGS = ("algo", "profile", "seed", "n_timesteps", "tensorboard_log", "log_interval", "verbose",
                "save_freq", "keep_checkpoints")


def restore_args(args: argparse.Namespace, saved: dict[str, Any], where: str) -> None:
    """
    The run's own flags (``args.yml``) where the command line leaves them at their defaults, checked as
    the command line's are.

    :raises cfg.ConfigError: a saved value of the wrong type or out of range (a hand-edited ``args.yml``).
    """
    defaults = build_parser().parse_args([])
    for key in RESUMED_ARGS:
        if key in saved and getattr(args, key) == getattr(defaults, key):
            value, default = saved[key], getattr(defaults, key)
            if value is not None and default is not None and (
                    isinstance(value, bool) or not isinstance(value, type(default))):
                kind = "an integer" if isinstance(default, int) else "text"
                raise cfg.ConfigError(f"the run file {where} has {key}={value!r}, not {kind}: repair it or "
                                      "train again")
            setattr(args, key, value)
    try:
        preflight.check_args(args)
    except cfg.ConfigError as exc:
        raise cfg.ConfigError(f"the run file {where}: {exc}") from None


def prepare(args: argparse.Namespace) -> tuple[dict[str, Any], Path | None, Path | None, runlock.RunLock | None]:
    """
    Everything that can be refused, before anything is written: the hyperparameter entry, the env,
    the RAM, the log folder (and the TensorBoard folder), and for ``--resume`` the run folder, that no
    other process is writing it (its lock is taken here and returned), and its last good checkpoint.

    :return: the entry, the resume folder, the checkpoint to resume from and the run folder's lock
        (None, None, None for a new run).
    :raises cfg.ConfigError: one line naming the bad value (the lock is released).
    """
    preflight.check_args(args)
    args.conf_file = args.conf_file or str(cfg.default_config(args.algo))
    resume_dir = checkpoint = lock = None
    try:
        if args.resume is not None:
            resume_dir = Path(args.resume)
            if args.hyperparams:
                given = " ".join(f"{key}:{value}" for key, value in args.hyperparams.items())
                raise cfg.ConfigError(f"-params {given} is not allowed with --resume: a resumed run keeps its "
                                      "config.yml (start a new run to change hyperparameters)")
            entry = read_run_file(resume_dir / args.env / "config.yml", args.resume)
            lock = runlock.RunLock(resume_dir)  # before anything of the run is read for use or written
            saved = read_run_file(resume_dir / args.env / "args.yml", args.resume, yaml.UnsafeLoader)
            if args.algo != build_parser().get_default("algo") and saved.get("algo", args.algo) != args.algo:
                raise cfg.ConfigError(f"--algo {args.algo} does not match the run in {args.resume!r}, trained with "
                                      f"{saved['algo']} (leave --algo out when resuming)")
            n_given = args.n_timesteps != build_parser().get_default("n_timesteps")
            restore_args(args, saved, str(resume_dir / args.env / "args.yml"))
            try:
                checkpoint, skipped = ckpt_files.latest_valid_checkpoint(resume_dir)
            except ckpt_files.CheckpointError as exc:
                raise cfg.ConfigError(str(exc)) from None
            for line in skipped:
                print(f"warning: {line}; using the earlier checkpoint {checkpoint}", file=sys.stderr)
            recorded = None if n_given else ckpt_files.saved_target(checkpoint)
            if recorded is not None:  # a resume with -n, interrupted: its -n again
                args.n_timesteps = recorded
            step = ckpt_files.checkpoint_step(checkpoint)
            target = args.n_timesteps if args.n_timesteps > 0 else int(float(entry.get("n_timesteps", 0)))
            if target <= step:
                raise cfg.ConfigError(f"--resume {args.resume!r}: its checkpoint is at step {step} and the run "
                                      f"stops at {target}; give -n N with N > {step} to train further")
        else:
            entry = cfg.load_entry(args.conf_file, args.env, args.profile)
            entry.update(args.hyperparams or {})
            preflight.check_writable(args.log_folder)
        if args.tensorboard_log:
            preflight.check_writable(args.tensorboard_log, "TensorBoard folder")
        cfg.validate_entry(entry, args.algo, resumed=resume_dir is not None)
        parallel.check_parallel(entry)
        env_kwargs = {**entry.get("env_kwargs", {}), **(args.env_kwargs or {})}
        obs_shape = preflight.check_env(args.env, {**entry, "env_kwargs": env_kwargs})
        preflight.check_memory(entry, obs_shape)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return entry, resume_dir, checkpoint, lock


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no ALE banner: stderr is for errors
    try:
        entry, resume_dir, checkpoint, lock = prepare(args)
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    locks = [lock] if lock is not None else []
    try:
        return run_training(args, entry, resume_dir, checkpoint, locks)
    finally:  # the process ending releases them too; this is for callers of main() in-process
        for held in locks:
            held.release()


def build_failure(args: argparse.Namespace, exc: BaseException) -> str:
    """One line for an error raised while the run's objects are built from checked input."""
    if isinstance(exc, cfg.ConfigError):
        return str(exc)
    source = (f"{args.resume}/{args.env}/config.yml" if args.resume
              else f"entry {cfg.entry_name(args.env, args.profile)!r} of {args.conf_file}"
              + (" with -params" if args.hyperparams else ""))
    reason = " ".join(str(exc).split())
    return f"the {args.algo} learner cannot be built from {source}: {type(exc).__name__}: {reason}"


def run_training(args: argparse.Namespace, entry: dict[str, Any], resume_dir: Path | None, checkpoint: Path | None,
                 locks: list[runlock.RunLock]) -> int:
    """
    Build the run (a new run folder, made exclusively and locked, or the resumed one) and train.
    A failure while building ends with one line and exit status 2, and removes the new run folder.

    :param locks: the run folder's lock is appended here (held until the caller releases it).
    """
    if args.progress is None:
        args.progress = sys.stdout.isatty()
    if args.seed < 0:
        args.seed = int(np.random.randint(2**32 - 1, dtype="int64"))
    if args.num_threads != "auto" and args.num_threads > 0:
        th.set_num_threads(args.num_threads)
    set_random_seed(args.seed)

    fresh: Path | None = None
    created: list[Path] = []
    try:
        if args.tensorboard_log:
            created += runlock.make_dirs(args.tensorboard_log)
        if resume_dir is None:  # RL Zoo's <log>/<algo>/<env>_<id>, the id no other run can take
            suffix = f"_{uuid.uuid4()}" if args.uuid else ""
            fresh, made = runlock.create_run_folder(Path(args.log_folder) / args.algo, args.env, suffix)
            created += made
            locks.append(runlock.RunLock(fresh))
        exp_manager, model, state = build_run(args, entry, resume_dir, checkpoint, fresh)
    except Exception as exc:
        if fresh is not None:
            runlock.discard_run_folder(fresh, created)
        else:
            runlock.remove_created(created)
        print(f"error: {build_failure(args, exc)}", file=sys.stderr)
        return 2
    print(f"PyTorch device: {model.device}")
    return learn(args, exp_manager, model, state, checkpoint)


def build_run(args: argparse.Namespace, entry: dict[str, Any], resume_dir: Path | None, checkpoint: Path | None,
              fresh: Path | None) -> tuple[BreakoutExperimentManager, Any, dict[str, Any] | None]:
    """RL Zoo's ``ExperimentManager`` and the learner (new, or the checkpoint's with its state)."""
    state = ckpt_files.load_state(checkpoint) if checkpoint is not None else None
    if checkpoint is not None:
        ckpt_files.restore_run_files(checkpoint, resume_dir)
    exp_manager = BreakoutExperimentManager(
        args, args.algo, args.env, args.log_folder,
        tensorboard_log=args.tensorboard_log,
        n_timesteps=args.n_timesteps,
        eval_freq=args.eval_freq,
        n_eval_episodes=args.eval_episodes,
        env_kwargs=args.env_kwargs,
        trained_agent=str(checkpoint / "model.zip") if checkpoint is not None else "",
        # a resumed run plays new games, not the first ones again
        seed=(args.seed + (state["num_timesteps"] if state else 0)) % (preflight.MAX_SEED + 1),
        log_interval=args.log_interval,
        verbose=args.verbose,
        device=args.device,
        config=args.conf_file,
        show_progress=args.progress,
        profile=args.profile,
        entry=entry,
        resume_dir=resume_dir,
        run_dir=fresh,
        trained_schedule=ckpt_files.saved_schedule(checkpoint) if checkpoint is not None else None,
    )
    line = parallel.describe_schedule({**entry, **exp_manager.trained_schedule})
    if line:
        print(line)
    if resume_dir is None:
        print(f"Training {args.algo} on {args.env} (profile {args.profile or cfg.DEFAULT_PROFILE}), seed {args.seed}")
    model, _ = exp_manager.setup_experiment()
    return exp_manager, model, state


def learn(args: argparse.Namespace, exp_manager: BreakoutExperimentManager, model: Any,
          state: dict[str, Any] | None, checkpoint: Path | None) -> int:
    """Train to ``n_timesteps`` (from the checkpoint's ``state``) with checkpoints, save the final model."""
    run_dir = Path(exp_manager.save_path)
    running = next((c for c in exp_manager.callbacks if isinstance(c, RunningRewardCallback)), None)
    if state is not None:
        ckpt.restore_callbacks(state, running)
        ckpt.restore_rng_state(model, state["rng"])
        if not monitor_clock.resume(model.env, state.get("monitor_seconds")):  # t goes on from the checkpoint's
            print("Monitor clock: the checkpoint has none for these games (written before 2026-12-04): "
                  "the resumed games' t restart from 0, as plot expects of such runs")
        print(f"Resuming {run_dir} from {checkpoint.name}: step {model.num_timesteps} of {exp_manager.n_timesteps}")
    saver = ckpt.CheckpointCallback(run_dir, args.save_freq, args.keep_checkpoints, running_reward=running,
                                    n_timesteps=exp_manager.n_timesteps)
    threads = [AdaptiveThreadsCallback(verbose=1)] if args.num_threads == "auto" else []
    remaining = exp_manager.n_timesteps - model.num_timesteps
    runs.clear_run_end(run_dir)
    try:
        model.learn(
            remaining,
            callback=[*exp_manager.callbacks, *threads, saver],
            log_interval=args.log_interval,
            tb_log_name=run_dir.name,
            reset_num_timesteps=state is None,
        )
    except ckpt.TrainingDivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk while training (the Monitor file): exit 1, the run resumes
        if not is_disk_full(exc):
            raise
        ckpt.close_quietly(model.env)
        print(f"error: {describe_write_error(exc)} at step {model.num_timesteps}; the last good checkpoint "
              f"is {saver.last_checkpoint}: free some space, then: python -m sb3_breakout.train --resume {run_dir}",
              file=sys.stderr)
        return 1
    finally:
        model.env.close()
    exp_manager.save_trained_model(model)
    reason = ("interrupted" if saver.interrupted else
              "done" if model.num_timesteps >= exp_manager.n_timesteps else "stopped")
    try:  # for `learning_curve follow --wait`; the model and checkpoints are already saved
        runs.write_run_end(run_dir, reason, model.num_timesteps, exp_manager.n_timesteps)
    except (OSError, OutputNotWritten) as exc:
        why = describe_write_error(exc) if isinstance(exc, OSError) else str(exc)
        print(f"warning: {why}: {runs.RUN_END} not written", file=sys.stderr)
    if saver.interrupted:
        print(f"Interrupted: checkpoint {saver.last_checkpoint}. Resume with: "
              f"python -m sb3_breakout.train --resume {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
