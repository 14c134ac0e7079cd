"""Two writers: a run folder in use is refused to a second trainer, and fresh runs never share a folder."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ENV, run_cli, small_entry, write_conf
from sb3_breakout.checkpoint_files import list_checkpoints
from sb3_breakout.runlock import RunBusyError, RunLock, create_run_folder


def test_a_held_lock_refuses_a_second_holder_and_is_released(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunBusyError, match=f"in use by process {os.getpid()}"):
            RunLock(tmp_path)
    RunLock(tmp_path).release()  # free again
    assert list(tmp_path.iterdir()) == []  # the lock writes nothing into the folder


def test_runs_created_at_the_same_moment_get_different_folders(tmp_path):
    """8 threads released together into one log folder (an earlier run is _3): 8 new folders, _4 to _11."""
    (tmp_path / "dqn" / f"{ENV}_3").mkdir(parents=True)
    barrier = threading.Barrier(8)
    made = []

    def create():
        barrier.wait()
        made.append(create_run_folder(tmp_path / "dqn", ENV)[0].name)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(made, key=lambda name: int(name.rsplit("_", 1)[1])) == [f"{ENV}_{i}" for i in range(4, 12)]


def test_two_fresh_trainings_started_together_write_two_runs(tmp_path, small_conf):
    command = [sys.executable, "-m", "sb3_breakout.train", "-conf", str(small_conf), "-f", "logs", "-n", "64",
               "--num-threads", "1", "--no-progress", "--seed", "0"]
    first, second = (subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for _ in range(2))
    for proc in (first, second):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    runs = sorted(p.name for p in (tmp_path / "logs" / "dqn").iterdir())
    assert runs == [f"{ENV}_1", f"{ENV}_2"]
    for name in runs:
        assert (tmp_path / "logs" / "dqn" / name / f"{ENV}.zip").is_file()


def wait_for(condition, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_a_live_run_refuses_a_second_resume_until_it_is_killed(tmp_path):
    """
    A real training process holds its run folder: ``--resume`` of it is refused (one line, exit 2,
    naming the process) while it trains; after a SIGKILL the kernel has dropped the lock, and a
    ``--resume`` continues from the last checkpoint.
    """
    conf = write_conf(tmp_path, small_entry(buffer_size=2000, learning_starts=100))
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    first = subprocess.Popen([sys.executable, "-m", "sb3_breakout.train", "-conf", str(conf), "-f", "logs",
                              "-n", "1000000", "--save-freq", "200", "--num-threads", "1", "--no-progress",
                              "--seed", "3"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        wait_for(lambda: list_checkpoints(run_dir), 300, first)  # training, with a checkpoint to resume from
        before = {p: p.stat().st_mtime_ns for p in run_dir.glob("*.csv")}
        second = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "--no-progress"], cwd=tmp_path)
        assert second.returncode == 2, second.stderr[-2000:]
        err = second.stderr.strip()
        assert err.count("\n") == 0 and f"in use by process {first.pid}" in err and str(run_dir) in err, err
        assert first.poll() is None  # the live run goes on
        assert {p: p.stat().st_mtime_ns for p in run_dir.glob("*.csv")}.keys() == before.keys()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    step = int(list_checkpoints(run_dir)[-1].name[5:])
    resumed = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "-n", str(step + 100),
                       "--no-progress", "--num-threads", "1"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"from step_{step}: step {step} of {step + 100}" in resumed.stdout
