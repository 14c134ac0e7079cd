"""Shipping a run's model (sb3_breakout.ship): RL Zoo's trained-agents layout, a slim zip that plays like the
original with both QR-DQN classes, and tools that read a shipped folder without writing into it."""

import hashlib
from pathlib import Path

import numpy as np
import torch as th
from sb3_contrib import QRDQN as ContribQRDQN

from conftest import ENV, run_cli
from sb3_breakout.qrdqn import QRDQN


def snapshot(folder: Path) -> dict[str, tuple[str, float]]:
    """Every file below ``folder``: its SHA-256 and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def ship(run_dir: Path, out: Path, cwd: Path, *extra: str):
    return run_cli(["-m", "sb3_breakout.ship", str(run_dir), "-o", str(out), *extra], cwd=cwd)


def test_ship_writes_the_rl_zoo_layout_with_a_slim_zip_that_acts_the_same(tiny_qrdqn_run, tmp_path):
    result = ship(tiny_qrdqn_run, tmp_path / "agents", tmp_path, "--load-checkpoint", "1000")
    assert result.returncode == 0, result.stderr[-3000:]
    shipped = tmp_path / "agents" / "qrdqn" / f"{ENV}_1"
    assert f"Wrote {tmp_path / 'agents' / 'qrdqn' / f'{ENV}_1'}" in result.stdout
    assert sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file()) == sorted([
        "0.monitor.csv", "README.md", f"{ENV}.zip", f"{ENV}/args.yml", f"{ENV}/config.yml"])
    # the Monitor CSV as it was at the checkpoint, not the run's (which goes on to 2,000 steps)
    original = tiny_qrdqn_run / "checkpoints" / "step_1000"
    assert (shipped / "0.monitor.csv").read_text() == (original / "monitor" / "0.monitor.csv").read_text()
    assert "does not resume training" in (shipped / "README.md").read_text()
    assert str(tmp_path) not in (shipped / "README.md").read_text()  # no folder of the machine that shipped it

    # a second ship takes the next id, as RL Zoo numbers runs; the first is untouched
    before = snapshot(shipped)
    assert ship(tiny_qrdqn_run, tmp_path / "agents", tmp_path).returncode == 0
    assert (tmp_path / "agents" / "qrdqn" / f"{ENV}_2" / f"{ENV}.zip").is_file() and snapshot(shipped) == before

    # the target network shares the online weights and Adam's state is empty: under 40% of the checkpoint's zip
    assert (shipped / f"{ENV}.zip").stat().st_size < 0.4 * (original / "model.zip").stat().st_size
    full = ContribQRDQN.load(original / "model.zip", device="cpu", buffer_size=1)
    obs = np.random.default_rng(0).integers(0, 256, (32, *full.observation_space.shape), dtype=np.uint8)
    for cls in (ContribQRDQN, QRDQN):  # sb3-contrib's class and this package's load it alike
        model = cls.load(shipped / f"{ENV}.zip", device="cpu")
        assert type(model) is cls and model.num_timesteps == full.num_timesteps
        assert model.replay_buffer.buffer_size == 1  # loading it allocates no replay of the run's size
        tensor = model.policy.obs_to_tensor(obs)[0]
        assert th.equal(model.policy.quantile_net(tensor), full.policy.quantile_net(tensor))
        assert th.equal(model.policy.quantile_net_target(tensor), full.policy.quantile_net(tensor))
        assert np.array_equal(model.predict(obs, deterministic=True)[0], full.predict(obs, deterministic=True)[0])


def test_tools_read_a_shipped_agent_and_write_nothing_into_it(tiny_qrdqn_run, tmp_path):
    assert ship(tiny_qrdqn_run, tmp_path / "trained-agents", tmp_path).returncode == 0
    shipped = tmp_path / "trained-agents" / "qrdqn" / f"{ENV}_1"
    before = snapshot(shipped)
    relative = str(shipped.relative_to(tmp_path))

    evaluation = run_cli(["-m", "sb3_breakout.evaluate", relative, "--games", "2", "--max-frames", "2000"],
                         cwd=tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    written = tmp_path / "logs" / "trained-agents" / "qrdqn" / f"{ENV}_1" / "evaluation" / "final.json"
    assert f"Wrote {written.relative_to(tmp_path)}" in evaluation.stdout and written.is_file()
    assert f'"model": "{relative}/{ENV}.zip"' in written.read_text()  # relative: no folder of this machine

    video = run_cli(["-m", "sb3_breakout.record", relative, "--max-video-frames", "20", "--format", "gif"],
                    cwd=tmp_path)
    assert video.returncode == 0, video.stderr[-3000:]
    assert (tmp_path / "logs" / "trained-agents" / "qrdqn" / f"{ENV}_1" / "videos" / "final.gif").is_file()

    enjoy = run_cli(["-m", "rl_zoo3.enjoy", "--algo", "qrdqn", "--env", ENV, "-f", "trained-agents",
                     "--no-render", "-n", "300", "--gym-packages", "sb3_breakout"], cwd=tmp_path)
    assert enjoy.returncode == 0, enjoy.stderr[-3000:]

    resume = run_cli(["-m", "sb3_breakout.train", "--resume", relative], cwd=tmp_path)
    assert resume.returncode == 2 and len(resume.stderr.strip().splitlines()) == 1, resume.stderr
    assert snapshot(shipped) == before


def test_ship_refuses_a_zip_outside_any_run_in_one_line(tiny_qrdqn_run, tmp_path):
    loose = tmp_path / "model.zip"
    loose.write_bytes((tiny_qrdqn_run / f"{ENV}.zip").read_bytes())
    result = run_cli(["-m", "sb3_breakout.ship", str(loose), "--algo", "qrdqn", "-o", "agents"], cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "agents").exists()
    assert result.stderr.strip().splitlines() == [
        f"error: {loose} is not in a run folder: ship takes a run (its config.yml, args.yml and Monitor CSVs go "
        "with the model)"]
