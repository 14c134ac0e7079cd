"""
The tuning CLI end to end: real Optuna studies on real storages (SQLite, a journal file, a PostgreSQL
server), real training of a few hundred steps per trial, real worker processes (two at once, one killed
with SIGKILL), and the YAML it writes trained by both training CLIs.
"""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from conftest import ENV, run_cli
from sb3_breakout import config as cfg
from sb3_breakout import tune

STUDY = f"dqn_{ENV}"
#: A search space for trials of a few hundred steps: tiny buffer, short epsilon schedule, learning
#: rate, gamma, max_grad_norm and final_eps as in the default space.
TINY_SPACE = """
buffer_size: 1000
batch_size: 32
random_steps: 100
decay_steps: {low: 200, high: 1000}
target_update_interval: {low: 100, high: 500, log: true}
train_freq: [4, 8]
gradient_steps: 1
"""
PG_URL = os.environ.get("SB3_BREAKOUT_PG_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")


def tune_args(folder: Path, *extra: str, steps: int = 300, space: str = "") -> list[str]:
    """
    A tiny study: ``steps`` per trial, 2 evaluations of 1 game cut at 800 frames (200 agent steps),
    one torch thread (two threads per process on two shared cores are many times slower).
    """
    path = folder / "space.yml"
    path.write_text(TINY_SPACE + space)
    return ["-m", "sb3_breakout.tune", "-n", str(steps), "--n-evaluations", "2", "--eval-episodes", "1",
            "--eval-max-frames", "800", "--search-space", str(path), "-f", "logs", "--num-threads", "1",
            *extra]


def start(folder: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def sqlite_study(folder: Path, name: str = STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'logs' / 'optuna.db'}")


def running_trials(folder: Path) -> int:
    """
    Trials RUNNING in the SQLite study, read with a read-only connection: ``optuna.load_study`` would
    open an ``RDBStorage``, which creates the schema and so races the worker still creating it.
    """
    path = folder / "logs" / "optuna.db"
    if not path.is_file():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:  # no tables yet, or locked by the writer
        return 0


def snapshot(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.value, t.params) for t in study.get_trials()]


def assert_exactly(study: optuna.Study, n: int) -> tune.TrialCounts:
    """The study holds n finished trials, none running or queued, numbered 0.. without gaps or repeats."""
    trials = study.get_trials()
    counts = tune.count_trials(trials)
    assert counts.finished == n, counts
    assert counts.running == 0 and counts.waiting == 0, counts
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in trials)
    return counts


#: A worker's line for a finished trial, and its progress lines while a trial runs.
TRIAL_DONE = re.compile(r"^trial (\d+) (COMPLETE|PRUNED|FAIL)\b")
STEP_LINE = re.compile(r"^trial (\d+): step ([\d,]+)/([\d,]+) \((\d+)%\), .*elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d")
EVALUATING = re.compile(r"^trial (\d+): evaluating at step ([\d,]+) \((\d+) games?\)\.\.\.$")
EVALUATED = re.compile(r"^trial (\d+): evaluation (\d+)/(\d+) at step ([\d,]+): mean score (-?\d+\.\d\d) over "
                       r"(\d+) games? in \d+ s, reported to the pruner; elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d$")


def trial_lines(*outputs: str) -> list[int]:
    """Numbers of the trials the workers report as run (finished) by them."""
    return [int(m[1]) for out in outputs for line in out.splitlines() if (m := TRIAL_DONE.match(line))]


def run_two_workers(folder: Path, args: list[str], timeout: float = 240) -> tuple[str, str]:
    workers = [start(folder, [*args, "--seed", str(seed)]) for seed in (1, 2)]
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=timeout)
        assert worker.returncode == 0, err[-3000:]
        outputs.append(out)
    return outputs[0], outputs[1]


# ----------------------------------------------------------------------------- one SQLite study
@pytest.fixture(scope="module")
def sqlite_run(tmp_path_factory):
    """One study of 3 trials in the default SQLite storage (read-only for the tests that use it)."""
    folder = tmp_path_factory.mktemp("tune")
    result = run_cli([*tune_args(folder), "--n-trials", "3", "--seed", "0"], cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result


def test_study_writes_yaml_csv_and_plots(sqlite_run):
    folder, result = sqlite_run
    out = folder / "logs" / STUDY
    study = sqlite_study(folder)
    assert_exactly(study, 3)
    assert "optuna-dashboard sqlite:///logs/optuna.db" in result.stdout
    assert len(trial_lines(result.stdout)) == 3

    csv = (out / "trials.csv").read_text().splitlines()
    assert len(csv) == 1 + 3 and "params_learning_rate" in csv[0]
    assert (out / "optimization_history.png").stat().st_size > 1000
    if sum(t.state == TrialState.COMPLETE for t in study.trials) >= 2:
        assert (out / "param_importances.png").stat().st_size > 1000

    # the best trial, merged over the default entry: a complete entry with NatureCNN, the compact
    # buffer, the penalty wrapper and both callbacks, the tuned values and the fixed ones
    best = study.best_trial
    entry = cfg.load_entry(out / "best.yml", ENV)
    cfg.validate_entry(entry)
    default = cfg.load_entry(cfg.default_config("dqn"), ENV)
    for key in ("policy", "policy_kwargs", "replay_buffer_class", "env_wrapper", "frame_stack",
                "n_timesteps"):
        assert entry[key] == default[key]
    assert "NatureCNN" in entry["policy_kwargs"]
    assert entry["learning_rate"] == best.params["learning_rate"]
    assert entry["gamma"] == best.params["gamma"] and entry["buffer_size"] == 1000
    callbacks = {next(iter(c)): next(iter(c.values())) for c in entry["callback"]}
    eps = callbacks["sb3_breakout.callbacks.LinearEpsilonCallback"]
    assert eps == dict(random_steps=100, decay_steps=best.params["decay_steps"], initial_eps=1.0,
                       final_eps=best.params["final_eps"])
    assert "sb3_breakout.callbacks.RunningRewardCallback" in callbacks
    # each trial's own folder: the entry it trained (without the running-reward callback) and its evaluations
    trial_dir = out / "trials" / f"trial_{best.number:04d}"
    trained = yaml.load((trial_dir / ENV / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    assert trained["learning_rate"] == best.params["learning_rate"]
    assert (trial_dir / "evaluations.npz").is_file()
    assert len(best.user_attrs["eval_scores"]) == 2 and best.value == best.user_attrs["eval_scores"][-1]


def test_each_trial_prints_its_steps_and_the_scores_reported_to_the_pruner(sqlite_run):
    """
    stdout a pipe: each trial's lines, in order and before its COMPLETE line, show its agent steps (every
    10%, with the time left), each evaluation as it starts, and the mean score it reported to the pruner,
    the very value Optuna stored as the trial's intermediate value of that evaluation.
    """
    folder, result = sqlite_run
    lines = result.stdout.splitlines()
    study = sqlite_study(folder)
    assert len(study.trials) == 3
    for trial in study.trials:
        n = trial.number
        mine = [line for line in lines if line.startswith((f"trial {n}:", f"trial {n} "))]
        assert TRIAL_DONE.match(mine[-1]) and mine[-1].startswith(f"trial {n} COMPLETE"), mine
        assert mine[0] == f"trial {n}: training 300 agent steps, 2 evaluations of 1 game", mine
        steps, reported, last_step = [], {}, 0
        for before, line in zip(mine[:-2], mine[1:-1], strict=True):
            if m := STEP_LINE.match(line):
                step = int(m[2].replace(",", ""))
                assert m[3] == "300" and step > last_step, line
                steps.append(step)
                last_step = step
            elif m := EVALUATED.match(line):
                index, step = int(m[2]), int(m[4].replace(",", ""))
                assert EVALUATING.match(before) and f"at step {m[4]} " in before, (before, line)
                assert index == len(reported) + 1 and m[3] == "2" and m[6] == "1", line
                assert step == last_step, line  # at the step line just printed (its 50% / 100%)
                reported[index] = m[5]
            else:
                assert EVALUATING.match(line), line
        assert steps == [30 * k for k in range(1, 11)], mine
        assert reported == {step: f"{value:.2f}" for step, value in trial.intermediate_values.items()}, mine
        assert sorted(reported) == [1, 2] and float(reported[2]) == trial.value


def test_best_yaml_trains_with_both_clis(sqlite_run, tmp_path):
    folder, _ = sqlite_run
    best = folder / "logs" / STUDY / "best.yml"
    ours = run_cli(["-m", "sb3_breakout.train", "-conf", str(best), "-n", "200", "--seed", "0", "-f", "runs",
                    "--num-threads", "1"], cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert (tmp_path / "runs" / "dqn" / f"{ENV}_1" / f"{ENV}.zip").is_file()
    zoo = run_cli(["-m", "rl_zoo3.train", "--algo", "dqn", "--env", ENV, "--conf-file", str(best),
                   "-n", "200", "--seed", "0", "-f", "zoo", "--eval-freq", "-1", "--num-threads", "1"],
                  cwd=tmp_path)
    assert zoo.returncode == 0, zoo.stderr[-3000:]
    assert (tmp_path / "zoo" / "dqn" / f"{ENV}_1" / f"{ENV}.zip").is_file()


def test_running_again_joins_the_study(sqlite_run, tmp_path):
    """The same command on a finished study runs no trial; a larger --n-trials extends it."""
    folder, _ = sqlite_run
    before = snapshot(sqlite_study(folder))
    again = run_cli([*tune_args(folder), "--n-trials", "3", "--seed", "0"], cwd=folder)
    assert again.returncode == 0, again.stderr[-3000:]
    assert trial_lines(again.stdout) == [] and "3/3 trials finished" in again.stdout
    assert snapshot(sqlite_study(folder)) == before


@pytest.mark.parametrize("bad, message", [
    (["--sampler", "annealing"], ["'annealing'", "tpe, random, cmaes, qmc, gp"]),
    (["--storage", "postgresql//127.0.0.1/optuna"], ["'postgresql//127.0.0.1/optuna'", "postgresql://"]),
    (["--search-space", "BAD"], ["'learning_rat'", "learning_rate"]),
    (["--progress-interval", "-1"], ["--progress-interval=-1.0", "must be >= 0 seconds"]),
])
def test_bad_input_is_one_line_exit_2_and_the_study_is_untouched(sqlite_run, bad, message):
    folder, _ = sqlite_run
    study_before = sqlite_study(folder)
    before, attrs = snapshot(study_before), study_before.user_attrs
    (folder / "bad_space.yml").write_text("learning_rat: {low: 1.0e-4, high: 1.0e-3}\n")
    bad = [str(folder / "bad_space.yml") if b == "BAD" else b for b in bad]
    result = run_cli([*tune_args(folder), "--n-trials", "5", *bad], cwd=folder)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("error: ")
    for part in message:
        assert part in result.stderr
    after = sqlite_study(folder)
    assert snapshot(after) == before and after.user_attrs == attrs


def test_joining_with_another_budget_is_refused(sqlite_run):
    folder, _ = sqlite_run
    before = snapshot(sqlite_study(folder))
    result = run_cli([*tune_args(folder, steps=500), "--n-trials", "5"], cwd=folder)
    assert result.returncode == 2 and "n_timesteps=300" in result.stderr, result.stderr
    assert snapshot(sqlite_study(folder)) == before


# --------------------------------------------------------------------------------- many workers
def test_two_workers_finish_exactly_n_trials_on_sqlite(tmp_path):
    out1, out2 = run_two_workers(tmp_path, [*tune_args(tmp_path, steps=200), "--n-trials", "4",
                                            "--study-name", "pair"])
    assert_exactly(sqlite_study(tmp_path, "pair"), 4)
    assert sorted(trial_lines(out1, out2)) == [0, 1, 2, 3]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_killed_worker_trial_is_failed_by_heartbeat_and_retried(tmp_path):
    """
    A one-trial study whose worker is killed mid-trial: a new worker finds the trial running, waits
    until its heartbeat is older than the grace period, fails it and runs its retry.
    """
    args = [*tune_args(tmp_path, steps=1000), "--n-trials", "1", "--study-name", "killed",
            "--heartbeat-interval", "1", "--grace-period", "5"]
    victim = start(tmp_path, args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not running_trials(tmp_path):
        if victim.poll() is not None:
            pytest.fail(f"the worker exited ({victim.returncode}) before a trial ran: {victim.stderr.read()[-3000:]}")
        time.sleep(0.5)
    assert running_trials(tmp_path), "the worker never started a trial"
    time.sleep(2.5)  # into training, with heartbeats recorded
    assert victim.poll() is None, "the trial finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert sqlite_study(tmp_path, "killed").trials[0].state == TrialState.RUNNING  # left behind

    rescuer = run_cli(args, cwd=tmp_path)
    assert rescuer.returncode == 0, rescuer.stderr[-3000:]
    study = sqlite_study(tmp_path, "killed")
    counts = assert_exactly(study, 1)
    assert counts.retried == 1 and len(study.trials) == 2
    assert study.trials[0].state == TrialState.FAIL
    retries = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == study.trials[0].params  # the same hyperparameters, run again


def postgres_url() -> str:
    """
    The test server's URL, normalised as the CLI does. Skipped only where no server is reachable and
    CI is not set; under CI the test fails instead.
    """
    url = tune.parse_storage(PG_URL, ".").url
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except Exception as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI is set but the PostgreSQL server {PG_URL} is not reachable: {exc}")
        pytest.skip(f"no PostgreSQL server at {PG_URL} (set SB3_BREAKOUT_PG_URL): {type(exc).__name__}")
    return url


def test_two_workers_finish_exactly_n_trials_on_postgresql(tmp_path):
    url = postgres_url()
    name = f"test-{uuid.uuid4().hex[:8]}"
    try:
        out1, out2 = run_two_workers(tmp_path, [*tune_args(tmp_path, steps=200), "--n-trials", "4",
                                                "--study-name", name, "--storage", PG_URL])
        study = optuna.load_study(study_name=name, storage=url)
        assert_exactly(study, 4)
        assert sorted(trial_lines(out1, out2)) == [0, 1, 2, 3]
        assert (tmp_path / "logs" / name / "best.yml").is_file()
        assert f"optuna-dashboard {tune.parse_storage(PG_URL, '.').display}" in out1
    finally:
        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass


def test_journal_file_storage(tmp_path):
    result = run_cli([*tune_args(tmp_path), "--n-trials", "1", "--storage", "study.log", "--pruner", "nop",
                      "--sampler", "random"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no heartbeat" in result.stderr
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))
    study = optuna.load_study(study_name=STUDY, storage=journal)
    assert_exactly(study, 1)
    assert (tmp_path / "logs" / STUDY / "best.yml").is_file()
    assert "optuna-dashboard study.log" in result.stdout


# ---------------------------------------------------------------------------------------- faults
def test_diverging_trials_are_pruned_and_the_study_goes_on(tmp_path):
    """A learning rate of 1e30 makes the loss NaN within a few gradient steps: each trial is pruned."""
    result = run_cli(tune_args(tmp_path, "--n-trials", "2", space="learning_rate: 1.0e+30\n"), cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]  # no completed trial, so no best.yml
    assert "No completed trial" in result.stdout
    study = sqlite_study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    reasons = [t.user_attrs["diverged"] for t in study.trials]
    assert all("not finite" in r or "nan" in r for r in reasons), reasons
    assert not (tmp_path / "logs" / STUDY / "best.yml").exists()
    assert len((tmp_path / "logs" / STUDY / "trials.csv").read_text().splitlines()) == 1 + 2


def test_raising_trials_are_failed_and_the_study_goes_on(tmp_path, monkeypatch):
    """A model that cannot be built (a hidden layer of -1 units) fails each trial; the study still ends."""
    monkeypatch.chdir(tmp_path)
    args = tune_args(tmp_path, "--n-trials", "2", "-params", 'policy_kwargs:"dict(net_arch=[-1])"')[2:]
    at = args.index("--num-threads")  # in-process: leave this process's torch threads alone
    del args[at:at + 2]
    assert tune.main(args) == 1
    study = sqlite_study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert "negative dimension" in study.trials[0].user_attrs["fail_reason"]
    assert tune.count_trials(study.trials).finished == 2
