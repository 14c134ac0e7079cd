"""
Faults survived, for real: a full disk (writes past a file-size limit fail with EFBIG, as on a full
disk with ENOSPC) and SIGKILLs at random moments, on the training CLI in a subprocess.

The full disk is made with ``RLIMIT_FSIZE`` on the trainer's process (set at its start, or lowered and
raised again while it runs, with ``prlimit``) and SIGXFSZ ignored, so a write past the limit fails
with EFBIG instead of killing the process: no mount, no root needed.
"""

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from stable_baselines3 import DQN

from conftest import ENV, run_cli
from sb3_breakout.checkpoint_files import list_checkpoints, load_state, verify_checkpoint

LIMIT = 2_000_000  # bytes: below a checkpoint's model.zip (~27 MB), above the Monitor file and the YAMLs


def no_room_above(limit=None):
    """``preexec_fn``: ignore SIGXFSZ (a write past the limit then fails with EFBIG) and set the limit."""
    def setup():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return setup


def set_file_limit(pid, limit):
    """Set a running process's file-size limit (the soft one: raising it back needs no privilege)."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


class Trainer:
    """``sb3_breakout.train`` in a subprocess; its stdout and stderr are pipes (not files: the limit would
    apply to them too), read by threads into ``out`` and ``err`` as they come."""

    def __init__(self, tmp_path, args, limit=None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sb3_breakout.train", *args, "--num-threads", "1", "--no-progress"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=no_room_above(limit))  # noqa: PLW1509 (the child only calls signal() and setrlimit())
        self._chunks = {"out": [], "err": []}
        self._readers = [threading.Thread(target=self._read, args=(stream, self._chunks[name]), daemon=True)
                         for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr))]
        for reader in self._readers:
            reader.start()
        self.pid = self.proc.pid

    @staticmethod
    def _read(stream, chunks):
        for line in stream:
            chunks.append(line)

    @property
    def out(self):
        return "".join(self._chunks["out"])

    @property
    def err(self):
        return "".join(self._chunks["err"])

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout):
        status = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=30)
        return status


def wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, "the trainer ended before the awaited moment"
        time.sleep(0.05)
    raise TimeoutError


def error_lines(text):
    return [line for line in text.splitlines() if line.startswith(("error:", "warning:"))]


def test_a_full_disk_drops_the_checkpoint_and_training_goes_on(tmp_path, small_conf):
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    proc = Trainer(tmp_path, ["-conf", str(small_conf), "-f", "logs", "-n", "1500", "--save-freq", "300",
                              "--seed", "3"])
    wait_for(lambda: any(c.name == "step_300" for c in list_checkpoints(run_dir)), proc)
    set_file_limit(proc.pid, LIMIT)  # the disk is full from now on
    wait_for(lambda: "not written" in proc.err, proc)
    failed = [c for c in (run_dir / "checkpoints").iterdir()]
    set_file_limit(proc.pid, resource.RLIM_INFINITY)  # room again
    assert proc.wait(timeout=300) == 0, proc.err[-3000:]
    err = proc.err
    assert "Traceback" not in err
    warnings = error_lines(err)
    assert warnings and all(
        w.startswith("warning: checkpoint of step ") and "File too large" in w
        and "the last good checkpoint" in w and "next save tries again" in w for w in warnings), warnings
    dropped = [int(w.split("checkpoint of step ")[1].split(" ")[0]) for w in warnings]
    assert all(step % 300 == 0 and step >= 600 for step in dropped)
    assert "checkpoints/step_300 is kept" in warnings[0]
    # while the disk was full, only whole checkpoints were there (the failed one's folder removed)
    assert all(c.name.startswith("step_") and c.name[5:].isdigit() for c in failed)
    # it tried again: the later saves were written, whole, and nothing unfinished is left
    assert [c.name for c in list_checkpoints(run_dir)] == ["step_1200", "step_1500"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_1200", "step_1500"]
    for checkpoint in list_checkpoints(run_dir):
        verify_checkpoint(checkpoint)
    assert DQN.load(run_dir / f"{ENV}.zip", device="cpu").num_timesteps == 1500


def test_a_full_disk_under_the_monitor_file_stops_with_exit_1_and_the_run_resumes(tmp_path, small_conf):
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    monitor = run_dir / "0.monitor.csv"
    proc = Trainer(tmp_path, ["-conf", str(small_conf), "-f", "logs", "-n", "1200", "--save-freq", "300",
                              "--seed", "4"])
    wait_for(lambda: any(c.name == "step_300" for c in list_checkpoints(run_dir)), proc)
    set_file_limit(proc.pid, monitor.stat().st_size)  # the next game's row does not fit
    assert proc.wait(timeout=300) == 1
    err = proc.err
    assert "Traceback" not in err, err[-3000:]
    (line,) = [w for w in error_lines(err) if w.startswith("error:")]
    assert "File too large" in line and "the last good checkpoint is" in line
    assert f"python -m sb3_breakout.train --resume {run_dir.relative_to(tmp_path)}" in line
    for checkpoint in list_checkpoints(run_dir):
        verify_checkpoint(checkpoint)
    kept = (list_checkpoints(run_dir)[-1] / "monitor" / "0.monitor.csv").read_text().splitlines()[2:]

    resumed = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "--num-threads", "1"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert DQN.load(run_dir / f"{ENV}.zip", device="cpu").num_timesteps == 1200
    # every game once, whole, in order: the checkpoint's games, then the resumed run's, as counted by the
    # running reward (its state in the checkpoint of the last step)
    rows = monitor.read_text().splitlines()[2:]
    assert all(len(row.split(",")) == 3 for row in rows) and len(set(rows)) == len(rows)
    assert rows[: len(kept)] == kept and len(rows) > len(kept)
    last = list_checkpoints(run_dir)[-1]
    assert last.name == "step_1200" and load_state(last)["running_reward"]["episode_count"] == len(rows)


def test_a_full_disk_keeps_the_previous_final_model_and_the_run_resumes(tmp_path, small_conf):
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    first = run_cli(["-m", "sb3_breakout.train", "-conf", str(small_conf), "-f", "logs", "-n", "300",
                     "--save-freq", "300", "--seed", "5", "--num-threads", "1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    final = run_dir / f"{ENV}.zip"
    before = final.read_bytes()

    proc = Trainer(tmp_path, ["--resume", str(run_dir), "-n", "600"], limit=LIMIT)  # full from the start
    assert proc.wait(timeout=300) == 1
    err = proc.err
    assert "Traceback" not in err, err[-3000:]
    lines = error_lines(err)
    assert lines[0].startswith("warning: checkpoint of step 600 not written: File too large")
    assert lines[-1].startswith(f"error: the final model {final} was not written: File too large")
    assert "the previous one is kept" in lines[-1] and f"--resume {run_dir}" in lines[-1]
    assert len(lines) == 2
    assert final.read_bytes() == before  # whole, the 300-step model
    assert DQN.load(final, device="cpu").num_timesteps == 300
    assert sorted(p.name for p in run_dir.iterdir() if ".tmp" in p.name) == []
    assert [c.name for c in list_checkpoints(run_dir)] == ["step_300"]

    again = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "-n", "600", "--num-threads", "1"],
                    cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "from step_300: step 300 of 600" in again.stdout
    assert DQN.load(final, device="cpu").num_timesteps == 600


def test_killed_at_random_moments_the_run_survives(tmp_path):
    """``scripts/chaos_resume.py`` with 3 SIGKILLs, some inside a checkpoint save (its checks: see the script)."""
    result = run_cli(["scripts/chaos_resume.py", "--kills", "3", "-n", "1000", "--save-freq", "200",
                      "--folder", str(tmp_path / "chaos")], cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("3 kills (") and ", 3 survived;" in summary
    assert int(summary.split("(")[1].split(" ")[0]) >= 1  # at least one kill landed inside a save


def test_a_full_disk_keeps_the_tuning_study_outputs_whole(tmp_path, monkeypatch, capsys):
    """
    ``tune``'s best.yml and trials.csv: a write that finds no room (here: this process's file-size limit
    lowered for the call, SIGXFSZ ignored) leaves the previous copies whole and exits 1 with one line.
    """
    import optuna
    from optuna.distributions import FloatDistribution

    from sb3_breakout import tune

    monkeypatch.chdir(tmp_path)
    plan = tune.prepare(tune.build_parser().parse_args(["-n", "300", "-f", "logs", "--study-name", "s"]))
    study = optuna.create_study(direction="maximize")

    def add_trial(value, learning_rate):
        study.add_trial(optuna.trial.create_trial(
            params={"learning_rate": learning_rate}, value=value,
            distributions={"learning_rate": FloatDistribution(1e-5, 1e-3, log=True)}))

    add_trial(3.0, 1e-4)
    assert tune.write_outputs(study, plan).value == 3.0
    outputs = {name: (plan.out_dir / name).read_bytes() for name in ("best.yml", "trials.csv")}
    assert b"learning_rate: 0.0001" in outputs["best.yml"]

    add_trial(7.0, 2e-4)  # a better trial: both files would change
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, limits[1]))
    try:
        with pytest.raises(SystemExit) as stopped:
            tune.write_outputs(study, plan)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: {plan.out_dir / 'trials.csv'} was not written: File too large")
    assert "the previous copy is kept" in err and "run the same command again" in err
    assert {name: (plan.out_dir / name).read_bytes() for name in outputs} == outputs
    assert sorted(p.name for p in plan.out_dir.iterdir() if ".tmp" in p.name) == []

    assert tune.write_outputs(study, plan).value == 7.0  # room again: the same call writes both
    assert b"learning_rate: 0.0002" in (plan.out_dir / "best.yml").read_bytes()
