"""Checkpoints, resume after SIGKILL/SIGTERM, damaged checkpoints, determinism: real processes, real files."""

import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from conftest import ENV, run_cli
from sb3_breakout import train
from sb3_breakout.checkpoint_files import list_checkpoints, verify_checkpoint, write_manifest
from sb3_breakout.runs import run_end


def start_training(tmp_path, conf, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "sb3_breakout.train", "-conf", str(conf), "-f", "logs", "--seed", "3",
         "--num-threads", "1", *extra],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError


def expected_eps(t):  # the small config's schedule
    return 1.0 if t < 200 else max(0.1, 1.0 - 0.9 * t / 2_000)


def games_in(run_dir):
    return len((run_dir / "0.monitor.csv").read_text().splitlines()) - 2  # two header lines


def test_sigkill_then_resume_continues_the_run(tmp_path, small_conf):
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    proc = start_training(tmp_path, small_conf, "-n", "1500", "--save-freq", "300")
    wait_for(lambda: any(p.name == "step_600" for p in list_checkpoints(run_dir)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    checkpoint = list_checkpoints(run_dir)[-1]
    step = int(checkpoint.name[5:])
    with open(checkpoint / "state.pkl", "rb") as f:
        state = pickle.load(f)
    games_at_checkpoint = state["running_reward"]["episode_count"]
    with open(checkpoint / "replay_buffer.pkl", "rb") as f:
        buffer_at_checkpoint = pickle.load(f)

    resumed = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "--num-threads", "1"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"from step_{step}: step {step} of 1500" in resumed.stdout
    # --save-freq 300 and --keep-checkpoints 2 come back from args.yml (the default would be 100,000)
    assert [c.name for c in list_checkpoints(run_dir)] == ["step_1200", "step_1500"]
    final = DQN.load(run_dir / f"{ENV}.zip", device="cpu")
    assert final.num_timesteps == 1500
    # epsilon continues the schedule (a restarted one would be at expected_eps(1500 - step))
    assert final.exploration_rate == pytest.approx(expected_eps(1500))
    assert expected_eps(1500) != pytest.approx(expected_eps(1500 - step))
    assert final._n_calls == 1500  # the target network's update phase continues too
    # the running reward's episode count continues: its last line counts every game of the Monitor
    last_line = [line for line in resumed.stdout.splitlines() if line.startswith("running reward")][-1]
    episodes = int(last_line.split(" at episode ")[1].split(",")[0])
    assert episodes == games_in(run_dir) > games_at_checkpoint
    # the replay buffer was restored: the first `step` transitions are the checkpoint's
    with open(list_checkpoints(run_dir)[-1] / "replay_buffer.pkl", "rb") as f:
        buffer_at_end = pickle.load(f)
    assert buffer_at_end.pos == 1500 and buffer_at_checkpoint.pos == step
    samples = []
    for buffer in (buffer_at_checkpoint, buffer_at_end):
        np.random.seed(0)  # the same env column draws
        samples.append(buffer._get_samples(np.arange(step - 1)))  # the last one's next frame came later
    for field in ("observations", "actions", "next_observations", "dones", "rewards"):
        th.testing.assert_close(getattr(samples[0], field), getattr(samples[1], field), msg=field)


def test_sigterm_writes_a_checkpoint_and_exits_0(tmp_path, small_conf):
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    proc = start_training(tmp_path, small_conf, "-n", "1200", "--save-freq", "0", "-tb", "tb", "--log-interval", "1")
    wait_for(lambda: (run_dir / "0.monitor.csv").exists() and games_in(run_dir) >= 1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "SIGTERM received" in out and f"--resume {run_dir.relative_to(tmp_path)}" in out
    assert len(list_checkpoints(run_dir)) == 1
    checkpoint = list_checkpoints(run_dir)[0]
    step = int(checkpoint.name[5:])
    # the Monitor clock: one game, one clock; set far ahead, so that only a resumed clock can reach it
    with open(checkpoint / "state.pkl", "rb") as f:
        state = pickle.load(f)
    assert len(state["monitor_seconds"]) == 1 and 0 < state["monitor_seconds"][0] < 600
    state["monitor_seconds"] = [100_000.0]
    with open(checkpoint / "state.pkl", "wb") as f:
        pickle.dump(state, f)
    write_manifest(checkpoint)
    games_before = len((checkpoint / "monitor" / "0.monitor.csv").read_text().splitlines()) - 2
    # for follow --wait: how it ended (the final model may be one env step past the checkpoint)
    end = run_end(run_dir)
    assert end["reason"] == "interrupted" and end["target"] == 1200 and end["steps"] in (step, step + 1)
    resumed = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "--num-threads", "1"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert DQN.load(run_dir / f"{ENV}.zip", device="cpu").num_timesteps == 1200
    assert run_end(run_dir) == {"reason": "done", "steps": 1200, "target": 1200}
    # the Monitor's clock goes on from the checkpoint's: the resumed games' t follow the earlier ones'
    t = [float(line.split(",")[2]) for line in (run_dir / "0.monitor.csv").read_text().splitlines()[2:]]
    assert len(t) > games_before and t == sorted(t) and t[games_before - 1] < 600 and t[games_before] > 100_000
    # TensorBoard: one run folder whose curve goes on past the checkpoint
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tb_run,) = (tmp_path / "tb" / ENV).iterdir()
    events = EventAccumulator(str(tb_run))
    events.Reload()
    steps = [e.step for e in events.Scalars("rollout/exploration_rate")]
    assert min(steps) < step < max(steps)


def test_a_run_extended_with_n_then_interrupted_resumes_to_the_new_n(tmp_path, small_conf):
    """Trained to 800, resumed with -n 2000 and stopped by SIGTERM: a plain --resume trains on to 2,000 (the
    -n of the process that wrote the checkpoint), not back to the 800 of args.yml."""
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    first = run_cli(["-m", "sb3_breakout.train", "-conf", str(small_conf), "-f", "logs", "-n", "800", "--save-freq",
                     "400", "--seed", "1", "--num-threads", "1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    proc = subprocess.Popen([sys.executable, "-m", "sb3_breakout.train", "--resume", str(run_dir), "-n", "2000",
                             "--num-threads", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (run_dir / "checkpoints" / "step_1200").is_dir() or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0
    assert run_end(run_dir)["reason"] == "interrupted" and run_end(run_dir)["target"] == 2000

    resumed = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "--num-threads", "1"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "of 2000" in resumed.stdout
    assert DQN.load(run_dir / f"{ENV}.zip", device="cpu").num_timesteps == 2000
    assert run_end(run_dir) == {"reason": "done", "steps": 2000, "target": 2000}


def test_damaged_checkpoints_are_named_and_the_earlier_one_is_used(tmp_path, small_conf):
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    first = run_cli(["-m", "sb3_breakout.train", "-conf", str(small_conf), "-f", "logs", "-n", "800",
                     "--save-freq", "400", "--seed", "1", "--num-threads", "1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    older, newer = list_checkpoints(run_dir)
    model_zip = newer / "model.zip"
    model_zip.write_bytes(model_zip.read_bytes()[:1000])  # truncated, as by a full disk

    resumed = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "-n", "800", "--num-threads", "1"],
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert str(model_zip) in resumed.stderr and "truncated or corrupt" in resumed.stderr
    assert f"from {older.name}" in resumed.stdout
    # the resumed run (--save-freq 400 from args.yml) wrote step_800 again, in place of the damaged one
    assert [c.name for c in list_checkpoints(run_dir)] == [older.name, newer.name]
    verify_checkpoint(newer)

    for checkpoint in list_checkpoints(run_dir):  # now damage every checkpoint
        (checkpoint / "state.pkl").write_bytes(b"\x80\x04garbage")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    refused = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir)], cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "no usable checkpoint" in refused.stderr
    assert str(older / "state.pkl") in refused.stderr and str(newer / "state.pkl") in refused.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_same_seed_same_run(tmp_path, small_conf):
    """Same seed and a fixed thread count (``--num-threads auto`` may change it mid-run): the same run."""
    runs = []
    for folder in ("a", "b"):
        result = run_cli(["-m", "sb3_breakout.train", "-conf", str(small_conf), "-f", folder, "-n", "1000",
                          "--seed", "11", "--save-freq", "0", "--device", "cpu", "--num-threads", "1"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(tmp_path / folder / "dqn" / f"{ENV}_1")
    scores = [[line.split(",")[0] for line in (r / "0.monitor.csv").read_text().splitlines()[2:]] for r in runs]
    assert scores[0] == scores[1] and len(scores[0]) >= 2
    weights = [DQN.load(r / f"{ENV}.zip", device="cpu").policy.state_dict() for r in runs]
    for key in weights[0]:
        assert th.equal(weights[0][key], weights[1][key]), key


def _damage_config(run_dir):
    (run_dir / ENV / "config.yml").write_text("buffer_size: [5000\n")


def _drop_args(run_dir):
    (run_dir / ENV / "args.yml").unlink()


def _drop_checkpoints(run_dir):
    shutil.rmtree(run_dir / "checkpoints")


# (id, damage done to a copy of a finished run, extra CLI args, words the one-line message must contain)
BAD_RESUMES = [
    ("damaged config.yml", _damage_config, [], ["config.yml is damaged"]),
    ("missing args.yml", _drop_args, [], ["args.yml is missing"]),
    ("no checkpoint", _drop_checkpoints, [], ["no checkpoint"]),
    ("-params on resume", None, ["-params", "learning_rate:0.1"], ["-params learning_rate:0.1", "config.yml"]),
]


@pytest.mark.parametrize("case, damage, extra, words", BAD_RESUMES, ids=[c[0] for c in BAD_RESUMES])
def test_bad_resume_is_refused_and_the_run_stays_as_it_is(case, damage, extra, words, tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    if damage is not None:
        damage(run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    status = train.main(["--resume", str(run_dir), "-n", "3000", "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.count("\n") == 0 and err.startswith("error: "), err
    for word in words:
        assert word in err, (word, err)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_checkpoints_hold_the_buffer_compressed_and_old_ones_still_resume(tiny_run, tmp_path):
    """
    A checkpoint's replay buffer is its written rows, compressed (not the whole allocated arrays); a
    checkpoint written before that (the buffer pickled whole) still resumes, and so does a new one.
    """
    import copyreg

    from sb3_breakout.buffers import FrameStackReplayBuffer

    new_pkl = tiny_run / "checkpoints" / "step_2000" / "replay_buffer.pkl"
    with open(new_pkl, "rb") as f:
        buffer = pickle.load(f)
    assert buffer.pos == 2000 and buffer.buffer_size == 5000
    assert new_pkl.stat().st_size < len(pickle.dumps(buffer.observation_space)) + 2000 * 84 * 84 / 20

    class OldLayoutPickler(pickle.Pickler):  # the buffer as Python pickled it before it had pickle hooks
        def reducer_override(self, obj):
            if type(obj) is FrameStackReplayBuffer:
                return copyreg.__newobj__, (type(obj),), dict(obj.__dict__), None, None
            return NotImplemented

    for layout in ("old", "new"):
        run_dir = tmp_path / layout
        shutil.copytree(tiny_run, run_dir)
        checkpoint = run_dir / "checkpoints" / "step_2000"
        if layout == "old":
            with open(checkpoint / "replay_buffer.pkl", "wb") as f:
                OldLayoutPickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(buffer)
            write_manifest(checkpoint)
            assert (checkpoint / "replay_buffer.pkl").stat().st_size > buffer.frames.nbytes
        resumed = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "-n", "2400", "--num-threads", "1",
                           "--save-freq", "400"], cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "from step_2000: step 2000 of 2400" in resumed.stdout
        with open(run_dir / "checkpoints" / "step_2400" / "replay_buffer.pkl", "rb") as f:
            after = pickle.load(f)
        assert after.pos == 2400  # the 2,000 transitions of the checkpoint, then 400 more
        assert np.array_equal(after.frames[:2000], buffer.frames[:2000])
        assert np.array_equal(after.actions[:2000], buffer.actions[:2000])
