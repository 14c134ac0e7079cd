"""scripts/learning_curve.py on a real (tiny) run: greedy checks of its checkpoints, then the report."""

import argparse
import importlib.util
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import matplotlib.image as mpimg

from conftest import ENV, run_cli, small_entry, write_conf

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "learning_curve.py"
spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
learning_curve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(learning_curve)


def test_follow_then_report(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # the fixture is shared: work on a copy
    reference = tmp_path / "reference.csv"
    reference.write_text("steps,score\n0,1.0\n1000,1.5\n2000,2.0\n3000,2.5\n")

    assert learning_curve.main(["follow", str(run), "--eval-every", "1000", "--eval-games", "1"]) == 0
    greedy = learning_curve.greedy_done(run)
    assert sorted(greedy) == [1000, 2000] and all(len(scores) == 1 for scores in greedy.values())
    # each point sits where its checkpoint's finished games put it on the Monitor axis, like the curves
    rows = learning_curve.greedy_rows(run)
    for step in (1000, 2000):
        finished = learning_curve.pl.load_run(run / "checkpoints" / f"step_{step}" / "monitor").steps[-1]
        assert rows[step][0] == round(finished) and step - 600 < rows[step][0] <= step * 1.2
    # a second follow does not evaluate the same checkpoints again
    assert learning_curve.main(["follow", str(run), "--eval-every", "1000", "--eval-games", "1"]) == 0
    assert len((run / learning_curve.GREEDY_FILE).read_text().splitlines()) == 1 + 2

    out = tmp_path / "out"
    assert learning_curve.main(["report", str(run), "--names", "tiny", "--reference", str(reference),
                                "--out", str(out)]) == 0
    height, width = mpimg.imread(out / "learning_curve.png").shape[:2]
    assert (width, height) == (1000, 800)
    table = (out / "learning_curve.md").read_text()
    assert "| agent steps | tiny (running mean of 100 games) | reference |" in table
    assert "Greedy check of tiny at 1,000 steps" in table and "Greedy check of tiny at 2,000 steps" in table
    assert "tiny: running mean of 100 games not above 40 within" in table  # a few random games
    assert "reference: first above 40 never" in table
    # the run's small artefacts are copied beside the report, which can be made again from them alone
    assert (out / "0.monitor.csv").read_bytes() == (run / "0.monitor.csv").read_bytes()
    assert (out / learning_curve.GREEDY_FILE).read_bytes() == (run / learning_curve.GREEDY_FILE).read_bytes()
    assert learning_curve.main(["report", str(out), "--names", "tiny", "--reference", str(reference),
                                "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "learning_curve.md").read_text() == table


def wait_until(condition, timeout=300.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def signal_after_checkpoint(tmp_path, run, step, sig, resume=False, n=3000):
    """Train the small entry to ``n`` steps (checkpoints every 1,000), or resume ``run`` to ``n``; send ``sig``
    once the checkpoint of ``step`` is written. The exit status."""
    args = (["--resume", str(run), "-n", str(n)] if resume else
            ["-conf", str(write_conf(tmp_path, small_entry())), "-n", str(n), "--seed", "0", "-f", "logs"])
    proc = subprocess.Popen([sys.executable, "-m", "sb3_breakout.train", *args, "--save-freq", "1000",
                             "--num-threads", "1", "--no-progress"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: (run / "checkpoints" / f"step_{step}").is_dir() or proc.poll() is not None)
    proc.send_signal(sig)
    return proc.wait(timeout=300)


def test_follow_wait_outlasts_an_interrupted_run(tmp_path, capsys):
    """follow --wait goes on through a SIGTERM (which writes the final model short of its steps) and a resume."""
    run = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    assert signal_after_checkpoint(tmp_path, run, 1000, signal.SIGTERM) == 0
    end = learning_curve.runs.run_end(run)
    assert end["reason"] == "interrupted" and 1000 <= end["steps"] < 3000 and end["target"] == 3000

    follower = threading.Thread(target=learning_curve.follow, args=(run, 1000, 1),
                                kwargs=dict(wait=True, poll=0.2), daemon=True)
    follower.start()
    wait_until(lambda: 1000 in learning_curve.greedy_done(run))
    time.sleep(2)  # ten more polls
    assert follower.is_alive()  # still waiting for the resume
    assert f"the run stopped at step {end['steps']:,} of 3,000: waiting" in capsys.readouterr().out

    result = run_cli(["-m", "sb3_breakout.train", "--resume", str(run), "--num-threads", "1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert learning_curve.runs.run_end(run) == {"reason": "done", "steps": 3000, "target": 3000}
    follower.join(timeout=300)
    assert not follower.is_alive()  # the run trained all its steps: following ends by itself
    assert sorted(learning_curve.greedy_done(run)) == [1000, 2000, 3000]


def test_follow_wait_waits_for_a_killed_run_and_names_its_newest_checkpoint(tmp_path, capsys):
    """A run killed by SIGKILL writes no final model and no run-end record. Here a run trained to 1,000, then
    resumed with -n 3,000 (not written to args.yml) and killed after step 2,000: the follower must wait (its
    final model did reach the 1,000 its files name) and name the step --resume goes on from, and its -n."""
    run = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    result = run_cli(["-m", "sb3_breakout.train", "-conf", str(write_conf(tmp_path, small_entry())), "-n", "1000",
                      "--seed", "0", "-f", "logs", "--save-freq", "1000", "--num-threads", "1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert signal_after_checkpoint(tmp_path, run, 2000, signal.SIGKILL, resume=True) == -signal.SIGKILL
    assert learning_curve.runs.run_end(run) is None and learning_curve.runs.trained_steps(run) == (1000, 1000)
    newest = int(learning_curve.list_checkpoints(run)[-1].name[5:])
    assert 2000 <= newest < 3000

    said: set[int] = set()
    assert not learning_curve.run_finished(run, said)
    out = capsys.readouterr().out
    assert f"the run stopped at step {newest:,} of 3,000: waiting" in out, out  # the -n its checkpoint holds
    assert not learning_curve.run_finished(run, said)  # said once per stop
    assert capsys.readouterr().out == ""


def test_follow_wait_ends_on_a_run_stopped_by_its_callback_and_waits_while_one_trains(tmp_path, tiny_run):
    from sb3_breakout.runlock import RunLock

    # a run the running-reward callback stops after 2 games (as when solved): its end, short of -n
    entry = small_entry()
    entry["callback"][1]["sb3_breakout.callbacks.RunningRewardCallback"]["max_episodes"] = 2
    result = run_cli(["-m", "sb3_breakout.train", "-conf", str(write_conf(tmp_path, entry)), "-n", "5000", "--seed",
                      "0", "-f", "logs", "--num-threads", "1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    end = learning_curve.runs.run_end(run)
    assert end["reason"] == "stopped" and end["steps"] < 5000
    follower = threading.Thread(target=learning_curve.follow, args=(run, 1000, 1),
                                kwargs=dict(wait=True, poll=0.2), daemon=True)
    follower.start()
    follower.join(timeout=60)
    assert not follower.is_alive()

    # a finished run that a process holds (a resume with a larger -n) is not finished
    done = tmp_path / "done"
    shutil.copytree(tiny_run, done)
    assert learning_curve.runs.run_end(done)["reason"] == "done"
    with RunLock(done):
        assert not learning_curve.run_finished(done, set())
    assert learning_curve.run_finished(done, set())


def test_reference_and_milestones():
    import pandas as pd

    reference = pd.DataFrame({"steps": [0, 100_000, 200_000], "score": [1.0, 2.0, 4.0]})
    assert learning_curve.reference_at(reference, 150_000) == 3.0
    assert learning_curve.reference_at(reference, 500_000) is None  # beyond the reference: no value


def test_first_above_counts_only_full_windows():
    import numpy as np

    # game i ends at agent step 100 * (i + 1); scores 0, then a lucky 50 at game 0 of a second curve
    steps = 100.0 * np.arange(1, 301)
    scores = np.concatenate([np.zeros(150), np.full(150, 50.0)])
    curve = learning_curve.pl.RunCurve(Path("."), steps, scores, steps / 100)
    # the mean of the last 100 games passes 40 once 81 of them scored 50: game 150 + 81 = 231
    assert learning_curve.first_above(curve, 40.0) == (23_100.0, 231)
    assert learning_curve.first_above(curve, 50.0) is None  # "above", not "at"
    lucky = learning_curve.pl.RunCurve(Path("."), steps[:99], np.r_[50.0, np.zeros(98)], steps[:99] / 100)
    assert learning_curve.first_above(lucky, 0.1) is None  # fewer games than the window
    lines = learning_curve.solved_lines([("a", curve), ("b", lucky)], [], 40.0)
    # the training time at that game: the Monitor's seconds (here steps / 100 = 231 s)
    # and the games after it (the running mean lags the agent): here 69 more games, all 50
    assert lines == ["a: running mean of 100 games first above 40 at 23,100 agent steps (game 231), after "
                     "0 h 04 min of training; the next 69 games (of 100): mean 50.0",
                     "b: running mean of 100 games not above 40 within 9,900 agent steps"]


def test_train_passes_hyperparams_and_checks_the_greedy_agent(tmp_path):
    import yaml

    # the user's command (a subprocess: train lowers its own priority and torch threads), a real short
    # run of the recipe with two overrides, its one checkpoint checked greedily
    command = [str(SCRIPT), "train", "-n", "900", "--seed", "0", "-f", "logs", "--num-threads", "1",
               "--eval-every", "300", "--eval-games", "1"]
    result = run_cli([*command, "-params", "buffer_size:1000", "target_update_interval:100"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "dqn").glob(f"{ENV}_*")
    config = yaml.safe_load((run / ENV / "config.yml").read_text())
    assert config["target_update_interval"] == 100 and config["buffer_size"] == 1000
    assert sorted(learning_curve.greedy_done(run)) == [300, 600, 900]
    # every checkpoint a greedy check needs is kept (train's default keeps 2): a lagging check finds its own
    assert [p.name for p in learning_curve.list_checkpoints(run)] == ["step_300", "step_600", "step_900"]
    # a bad override: the trainer's one-line error naming it, exit status 2, no new run folder
    result = run_cli([*command, "-params", "target_update_interval:0"], cwd=tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("target_update_interval=0 is not allowed: must be an integer >= 1")
    assert len(list((tmp_path / "logs" / "dqn").glob(f"{ENV}_*"))) == 1


def test_train_without_n_trains_the_entrys_steps_so_its_lr_schedule_is_the_entrys(tmp_path):
    # the QR-DQN fast entry's lr decays to 0 at -n (lin_1e-3 over its 1M): a default of the script's
    # own (500k, before) made it decay twice as fast without a word
    args = argparse.Namespace(algo="qrdqn", profile="fast", n_timesteps=None, seed=1, log_folder=str(tmp_path / "runs"),
                              eval_every=100_000, eval_games=5, num_threads=1, hyperparams=[])
    learning_curve.check_train_command(args)  # sb3_breakout.train's checks of the command it will run
    flags = learning_curve.train_flags(args)
    assert flags[flags.index("-n") + 1] == "1000000"
    assert learning_curve.entry_steps("dqn", None) == 10_000_000  # the recipe's; -n 500000 is given for curves
    assert list(tmp_path.iterdir()) == []
