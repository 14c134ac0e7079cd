"""
``python -m sb3_breakout.tune``: tune DQN's hyperparameters on Breakout with Optuna, on one machine
or many, and write the best trial as an RL Zoo YAML entry.

Data flow: the command reads the hyperparameter entry exactly as ``python -m sb3_breakout.train``
does (:func:`sb3_breakout.config.load_entry`, ``--profile``, ``-conf``, ``-params``) and the search
space (``hyperparams/dqn_search_space.yml``, narrowed by ``--search-space``), and checks both, the
sampler, the pruner and the storage URL before any storage is opened or folder made. It then opens
(or joins) an Optuna study in the storage (an SQLite file in the log folder by default; any RDB URL
such as PostgreSQL for several machines; a journal file on a shared file system) and runs trials
until the *study* holds ``--n-trials`` finished trials. Each trial merges its sampled values into the
entry (so NatureCNN, the compact replay buffer, the penalty wrapper and the epsilon callback stay),
builds the model through RL Zoo's ``ExperimentManager`` (:class:`TrialExperimentManager`), trains
``--n-timesteps`` agent steps and evaluates ``--n-evaluations`` times on full games with epsilon
0.05 (RL Zoo's ``TrialEvalCallback``, which reports to the pruner); its value is the mean game score
of the last evaluation. While a trial runs, plain flushed lines on stdout, each naming the trial,
show its agent steps (every 10% of them and at least every ``--progress-interval`` seconds, with the
time left), each evaluation as it starts and the mean score it reported to the pruner
(:class:`sb3_breakout.trials.TrialProgress`); ``-P`` shows SB3's progress bar instead of the step
lines. At the end the log folder ``<log>/<study>/`` holds ``best.yml`` (the best
trial as a complete RL Zoo entry for ``BreakoutNoFrameskip-v4``), ``trials.csv`` and two plots.

Several workers (processes, machines) share one study: each runs this same command with the same
``--storage`` and ``--study-name``. Why not only Optuna's ``MaxTrialsCallback``: it counts after a
trial, so two workers that check at the same moment both start one more trial (the study overshoots),
and it cannot tell a failed trial that was retried from one that was not. Here a worker *claims* a
trial under a lock shared by all workers (a file lock for SQLite and journal files, an advisory lock
on the PostgreSQL / MySQL server), held from counting the study's trials until Optuna has created the
new one; a failed trial that the heartbeat retried does not count, its retry does. Workers of an RDB
storage record a heartbeat while a trial runs: when a worker dies mid-trial, another marks its trial
failed after ``--grace-period`` seconds and runs it again (Optuna's
``RetryHeartbeatStaleTrialCallback``); a worker with nothing left to start waits for trials still
running elsewhere, so that the study is complete when a worker ends. Journal files have no heartbeat.

The search space is :mod:`sb3_breakout.search_space`; storages, the claim lock and trial counts are
:mod:`sb3_breakout.study_storage`; one trial (objective, sampler, pruner) is :mod:`sb3_breakout.trials`; the
study's files are :mod:`sb3_breakout.study_outputs`; this module is the worker loop and the CLI.

Exit status: 0 done, 1 the study has no completed trial, 2 bad input (nothing opened or written),
130 interrupted (the running trial is recorded as failed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import sys
import time
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from sb3_breakout import cli
from sb3_breakout import config as cfg
from sb3_breakout.cli import whole_number
from sb3_breakout.envs import ENV_ID
from sb3_breakout.preflight import check_env, check_memory
from sb3_breakout.search_space import (
    apply_values,
    check_space,
    default_search_space,
    load_search_space,
    space_spec,
)
from sb3_breakout.study_outputs import write_outputs
from sb3_breakout.study_storage import (
    ClaimLock,
    TrialCounts,
    count_trials,
    make_folders,
    open_study,
    parse_storage,
)
from sb3_breakout.trials import (
    PRUNERS,
    SAMPLER_PACKAGES,
    SAMPLERS,
    Objective,
    Plan,
    make_pruner,
    make_sampler,
)

#: Study user attributes written by this module.
SETTINGS_ATTR = "sb3_breakout.settings"
SPACE_ATTR = "sb3_breakout.search_space"


# ============================================================================================= CLI
def build_parser() -> argparse.ArgumentParser:
    parser = cli.OneLineArgumentParser(
        prog="python -m sb3_breakout.tune",
        description="Tune DQN's or QR-DQN's hyperparameters on Breakout with Optuna; write the best trial as RL Zoo "
        "YAML. Run the same command on several machines (same --storage and --study-name) to share one "
        "study.",
    )
    parser.add_argument("--algo", default="dqn",
                        help=f"learner: {' or '.join(cfg.ALGORITHMS)} (default: dqn)")
    parser.add_argument("--env", default=ENV_ID, help=f"environment id (default: {ENV_ID})")
    parser.add_argument("--profile", default=None,
                        help="YAML entry: 'deepmind' (default), 'keras', or NAME of an entry '<env>-NAME'")
    parser.add_argument("-conf", "--conf-file", default=None,
                        help="hyperparameter YAML (default: hyperparams/<algo>.yml)")
    parser.add_argument("-params", "--hyperparams", type=str, nargs="+", action=cli.ParamsAction, default=None,
                        help="override entry hyperparameters for every trial (and take them out of the "
                        "search), e.g. -params learning_starts:1000")
    parser.add_argument("--search-space", default=None, metavar="YAML",
                        help="change parameters of hyperparams/<algo>_search_space.yml: fix (value), narrow "
                        "({low, high} or a list) or drop (null) them")
    parser.add_argument("--n-trials", type=whole_number, default=100,
                        help="finished trials of the whole study, all workers together (default: 100)")
    parser.add_argument("-n", "--n-timesteps", type=whole_number, default=1_000_000,
                        help="agent steps of training per trial (default: 1000000)")
    parser.add_argument("--n-evaluations", type=whole_number, default=5,
                        help="evaluations per trial, reported to the pruner (default: 5)")
    parser.add_argument("--eval-episodes", type=whole_number, default=5, help="full games per evaluation (default: 5)")
    parser.add_argument("--eval-eps", type=float, default=0.05,
                        help="epsilon while evaluating (default: 0.05)")
    parser.add_argument("--eval-max-frames", type=whole_number, default=None,
                        help="emulator frames after which an evaluation game is cut (default: the entry's "
                        "env_kwargs max_episode_steps, 40000)")
    parser.add_argument("--sampler", default="tpe", help=f"{', '.join(SAMPLERS)} (default: tpe)")
    parser.add_argument("--pruner", default="median", help=f"{', '.join(PRUNERS)} (default: median)")
    parser.add_argument("--n-startup-trials", type=int, default=5,
                        help="trials sampled at random and never pruned before the sampler and pruner act "
                        "(default: 5)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage: a database URL (postgresql://user:password@host/db, "
                        "sqlite:///file.db) or a journal file path ending in .log (default: "
                        "sqlite:///<log folder>/optuna.db)")
    parser.add_argument("--study-name", default=None,
                        help="study to create or join (default: <algo>_<env>[-<profile>])")
    parser.add_argument("-f", "--log-folder", default="logs/tune",
                        help="outputs go to <log folder>/<study name>/ (default: logs/tune)")
    parser.add_argument("--heartbeat-interval", type=int, default=60,
                        help="seconds between a running trial's heartbeats; 0: none (default: 60; RDB "
                        "storages only)")
    parser.add_argument("--grace-period", type=int, default=None,
                        help="seconds without heartbeat after which a trial is failed and retried (default: "
                        "2 x interval)")
    parser.add_argument("--max-retry", type=int, default=3,
                        help="retries of a trial whose worker died (default: 3)")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                        help="with nothing left to start, wait for trials running in other workers "
                        "(default: on, with a heartbeat)")
    parser.add_argument("--seed", type=int, default=-1,
                        help="sampler seed; trial n trains with seed+n (default: -1, random; give workers "
                        "different seeds)")
    parser.add_argument("--device", default="auto", help="PyTorch device: auto, cpu, cuda")
    parser.add_argument("--num-threads", type=int, default=-1, help="torch CPU threads (default: torch's)")
    parser.add_argument("-P", "--progress", action=argparse.BooleanOptionalAction, default=False,
                        help="SB3's progress bar during each trial instead of its step lines (default: off: "
                        "plain lines, on a terminal too)")
    parser.add_argument("--progress-interval", type=float, default=300.0, metavar="SECONDS",
                        help="a line with a trial's agent steps and time left every 10%% of its steps and at "
                        "least every SECONDS seconds (default: 300; 0: only every 10%%)")
    parser.add_argument("--verbose", type=int, default=0, help="SB3 verbosity in trials (default: 0)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Numbers and names of the command line: a one-line ConfigError for the first bad one."""
    cfg.check_algo(args.algo)
    if args.sampler not in SAMPLERS:
        raise cfg.ConfigError(f"unknown sampler {args.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    for package in SAMPLER_PACKAGES.get(args.sampler, ()):
        if importlib.util.find_spec(package) is None:
            raise cfg.ConfigError(f"sampler {args.sampler!r} needs the Python package {package}: "
                                  f"pip install {package}")
    if args.pruner not in PRUNERS:
        raise cfg.ConfigError(f"unknown pruner {args.pruner!r}: choose one of {', '.join(PRUNERS)}")
    checks = [
        ("n_trials", args.n_trials >= 1, "must be >= 1"),
        ("n_evaluations", args.n_evaluations >= 1, "must be >= 1"),
        ("n_timesteps", args.n_timesteps >= args.n_evaluations,
         f"must be >= --n-evaluations ({args.n_evaluations})"),
        ("eval_episodes", args.eval_episodes >= 1, "must be >= 1"),
        ("eval_eps", 0.0 <= args.eval_eps <= 1.0, "must be in [0, 1]"),
        ("eval_max_frames", args.eval_max_frames is None or args.eval_max_frames >= 1, "must be >= 1"),
        ("n_startup_trials", args.n_startup_trials >= 0, "must be >= 0"),
        ("heartbeat_interval", args.heartbeat_interval >= 0, "must be >= 0 (0: no heartbeat)"),
        ("grace_period", args.grace_period is None or args.grace_period > args.heartbeat_interval,
         f"must be larger than --heartbeat-interval ({args.heartbeat_interval})"),
        ("max_retry", args.max_retry >= 0, "must be >= 0"),
        ("progress_interval", math.isfinite(args.progress_interval) and args.progress_interval >= 0,
         "must be >= 0 seconds (0: a line every 10% of a trial's steps only)"),
        ("seed", args.seed < 2**31, "must be < 2**31 (trial n trains with seed+n), or -1 for random seeds"),
    ]
    for name, ok, rule in checks:
        if not ok:
            raise cfg.ConfigError(f"--{name.replace('_', '-')}={getattr(args, name)} {rule}")
    cli.check_num_threads(args.num_threads)
    cli.check_device(args.device)


def default_study_name(algo: str, env_id: str, profile: str | None) -> str:
    return f"{algo}_{cfg.entry_name(env_id, profile)}"


def prepare(args: argparse.Namespace) -> Plan:
    """
    Every check that can refuse the command, before any storage is opened or folder made: the
    arguments, the sampler and pruner, the hyperparameter entry, the search space, the storage URL,
    the log folder, the env and the RAM for the largest replay buffer of the space.

    :raises ConfigError: one line naming the bad value and what is allowed.
    """
    check_args(args)
    conf_file = args.conf_file or str(cfg.default_config(args.algo))
    entry = cfg.load_entry(conf_file, args.env, args.profile)
    entry.update(args.hyperparams or {})
    cfg.validate_entry(entry, args.algo)
    space = load_search_space(args.search_space, default_search_space(args.algo))
    for key in args.hyperparams or {}:  # -params fixes a hyperparameter: it is not tuned
        space.pop(key, None)
    check_space(space, entry)
    for end in (0, 1):  # the entry with every parameter at its lowest, then its highest value
        cfg.validate_entry(apply_values(entry, {n: p.bounds()[end] for n, p in space.items()}), args.algo)
    storage = parse_storage(args.storage, args.log_folder)
    cli.check_output_folder(args.log_folder, "-f/--log-folder")
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # its banner on stderr is not an error
    obs_shape = check_env(args.env, entry)
    if "buffer_size" in space:
        check_memory({**entry, "buffer_size": space["buffer_size"].bounds()[1]}, obs_shape)
    else:
        check_memory(entry, obs_shape)

    study_name = args.study_name if args.study_name is not None else default_study_name(args.algo, args.env,
                                                                                         args.profile)
    if not study_name.strip():
        raise cfg.ConfigError("--study-name must not be empty")
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip(".") or "study"
    max_frames = args.eval_max_frames or entry.get("env_kwargs", {}).get("max_episode_steps")
    eval_env_kwargs = dict(entry.get("env_kwargs", {}))
    if max_frames:
        eval_env_kwargs["max_episode_steps"] = max_frames
    heartbeat = args.heartbeat_interval if storage.heartbeat_supported else 0
    settings = {
        "algo": args.algo, "env": args.env, "profile": args.profile or cfg.DEFAULT_PROFILE,
        "n_timesteps": args.n_timesteps,
        "n_evaluations": args.n_evaluations, "eval_episodes": args.eval_episodes, "eval_eps": args.eval_eps,
        "eval_max_frames": max_frames, "heartbeat_interval": heartbeat,
        "grace_period": (args.grace_period or 2 * heartbeat) if heartbeat else 0,
        "entry": json.loads(json.dumps(entry)),
    }
    return Plan(entry=entry, space=space, storage=storage, study_name=study_name,
                out_dir=Path(args.log_folder) / folder, settings=settings, eval_env_kwargs=eval_env_kwargs)


def check_study_settings(study: optuna.Study, plan: Plan) -> None:
    """
    Refuse to join a study made with another objective (budget, evaluation, entry, heartbeat);
    warn when its search space differs. A new study gets this worker's settings.

    :raises ConfigError: the first differing setting.
    """
    attrs = study.user_attrs
    if SETTINGS_ATTR not in attrs:
        study.set_user_attr(SETTINGS_ATTR, plan.settings)
        study.set_user_attr(SPACE_ATTR, space_spec(plan.space))
        study.set_user_attr("command", " ".join(getattr(sys, "orig_argv", sys.argv)))
        return
    stored = attrs[SETTINGS_ATTR]
    for key, mine in plan.settings.items():
        theirs = stored.get(key, "dqn" if key == "algo" else None)  # studies made before QR-DQN were DQN's
        if key == "entry" and theirs != mine:
            diff = sorted(k for k in set(theirs or {}) | set(mine) if (theirs or {}).get(k) != mine.get(k))
            raise cfg.ConfigError(
                f"study {plan.study_name!r} trains another entry (hyperparameter {diff[0]!r}: "
                f"{(theirs or {}).get(diff[0])!r} there, {mine.get(diff[0])!r} here): use the same "
                "-conf/--profile/-params, or another --study-name")
        if key != "entry" and theirs != mine:
            raise cfg.ConfigError(f"study {plan.study_name!r} was made with {key}={theirs!r}, this worker "
                                  f"has {mine!r}: use the study's settings, or another --study-name")
    if attrs.get(SPACE_ATTR) != json.loads(json.dumps(space_spec(plan.space))):
        print(f"warning: the search space differs from the one study {plan.study_name!r} was made with; "
              "this worker samples from its own", file=sys.stderr)


def _trial_line(trial: FrozenTrial | None, counts: TrialCounts, n_trials: int, study: optuna.Study) -> str:
    head = ""
    if trial is not None:
        seconds = (trial.duration.total_seconds() if trial.duration else 0.0)
        result = f"score {trial.value:.2f}" if trial.value is not None else trial.state.name.lower()
        head = f"trial {trial.number} {trial.state.name}: {result} in {seconds:.0f} s | "
    try:
        best = study.best_trial
        tail = f" | best {best.value:.2f} (trial {best.number})"
    except ValueError:
        tail = ""
    return f"{head}study: {counts.finished}/{n_trials} trials finished {counts.summary()}{tail}"


def run_worker(study: optuna.Study, objective: Objective, lock: ClaimLock, n_trials: int, heartbeat: bool,
               wait: bool, poll_s: float) -> None:
    """
    Run trials until the study holds ``n_trials`` finished ones: claim a trial under ``lock`` (fail
    stale trials, count, let Optuna create or dequeue the trial), run it with ``study.optimize``
    (``catch``: a raising trial is recorded as failed and the study goes on), repeat. With nothing
    left to claim but trials running elsewhere, wait for them if ``wait`` and ``heartbeat``.
    """
    waiting_for = -1
    while True:
        lock.acquire()
        try:
            if heartbeat:
                fail_stale_trials(study)
            counts = count_trials(study.get_trials(deepcopy=False))
            claim = counts.waiting > 0 or counts.claimed < n_trials
            if claim:
                objective.last_number = None
                try:
                    study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
                except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                    # Optuna cannot tell a trial that another worker failed meanwhile: its heartbeat
                    # was older than --grace-period (a stalled machine); the retry runs it again.
                    mine = [t for t in study.get_trials(deepcopy=False) if t.number == objective.last_number]
                    if not mine or mine[0].state != TrialState.FAIL:
                        raise
                    print(f"warning: trial {objective.last_number} was failed by another worker (no "
                          "heartbeat for --grace-period seconds); its retry runs it again", file=sys.stderr)
        finally:
            lock.release()
        if claim:
            trials = study.get_trials(deepcopy=False)
            done = next((t for t in trials if t.number == objective.last_number), None)
            print(_trial_line(done, count_trials(trials), n_trials, study), flush=True)
            continue
        if counts.running and heartbeat and wait:
            if counts.running != waiting_for:
                waiting_for = counts.running
                print(f"waiting for {counts.running} trial(s) running in other workers (a dead worker's "
                      "trial is failed and retried once its heartbeat is stale)", flush=True)
            time.sleep(poll_s)
            continue
        if counts.running:
            print(f"{counts.running} trial(s) still running in other workers", flush=True)
        return


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    args = build_parser().parse_args(argv)
    try:
        plan = prepare(args)
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    heartbeat = plan.settings["heartbeat_interval"]
    seed = args.seed if args.seed >= 0 else None

    def create(storage: optuna.storages.BaseStorage) -> optuna.Study:
        study = optuna.create_study(
            storage=storage, study_name=plan.study_name, direction="maximize", load_if_exists=True,
            sampler=make_sampler(args.sampler, seed, args.n_startup_trials),
            pruner=make_pruner(args.pruner, args.n_startup_trials, args.n_evaluations),
        )
        check_study_settings(study, plan)
        return study

    try:  # the default SQLite file lives in the log folder
        made = make_folders(Path(args.log_folder)) if args.storage is None else []
        study, lock = open_study(plan.storage, create, heartbeat, plan.settings["grace_period"] or None,
                                 args.max_retry, made)
    except (cfg.ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.num_threads > 0:
        import torch as th

        th.set_num_threads(args.num_threads)

    dashboard = f"optuna-dashboard {plan.storage.display}"
    if not plan.storage.journal and ":***@" in plan.storage.display:
        dashboard += " (password hidden)"
    counts = count_trials(study.get_trials(deepcopy=False))
    print(f"Study {plan.study_name!r} in {plan.storage.display}: {counts.finished}/{args.n_trials} trials "
          f"finished; {args.n_timesteps:,} steps per trial, sampler {args.sampler}, pruner {args.pruner}. "
          f"Watch it: {dashboard}", flush=True)
    objective = Objective(args, plan, lock)
    interrupted = False
    try:
        poll_s = max(1.0, min(5.0, heartbeat))
        run_worker(study, objective, lock, args.n_trials, heartbeat > 0, args.wait, poll_s)
    except KeyboardInterrupt:
        interrupted = True
        print("Interrupted: the running trial is recorded as failed", file=sys.stderr)
    finally:
        lock.release()

    best = write_outputs(study, plan)
    counts = count_trials(study.get_trials(deepcopy=False))
    print(f"Study {plan.study_name!r}: {counts.finished}/{args.n_trials} trials finished {counts.summary()}")
    print(f"Wrote {plan.out_dir}/trials.csv")
    if best is None:
        print("No completed trial yet: no best.yml")
        return 130 if interrupted else 1
    print(f"Best: trial {best.number}, mean score {best.value:.2f}, {best.params}")
    best_yml = plan.out_dir / "best.yml"
    print(f"Wrote {best_yml}: python -m sb3_breakout.train --conf-file {best_yml}")
    print(f"Open the study: {dashboard}   (pip install optuna-dashboard)")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
