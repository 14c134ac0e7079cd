"""
RL Zoo's tools find this package's checkpoints: each ``checkpoints/step_<N>/model.zip`` is also
``<run>/rl_model_<N>_steps.zip`` (a hard link: no second copy), the name ``rl_zoo3.enjoy`` and
``rl_zoo3.record_video`` look for. Real training (the real game, real SB3/sb3-contrib), real files,
RL Zoo's own tools in subprocesses.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch as th
from rl_zoo3.utils import EnvironmentName, get_model_path
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback

from conftest import ENV, run_cli, small_entry, write_conf
from sb3_breakout import config as cfg
from sb3_breakout import runs, zoo_links
from sb3_breakout.callbacks import RunningRewardCallback
from sb3_breakout.checkpoint import CheckpointCallback
from sb3_breakout.checkpoint_files import (
    PINNED,
    checkpoint_dir,
    checkpoint_step,
    intact_models,
    list_checkpoints,
    verify_checkpoint,
)
from sb3_breakout.envs import make_breakout_env
from sb3_breakout.torch_layers import NatureCNN


def zoo_names(run_dir: Path) -> dict[int, Path]:
    """RL Zoo's checkpoint names in a run folder, by step (as its get_model_path globs them)."""
    return {int(p.name.split("_")[-2]): p for p in run_dir.glob("rl_model_*_steps.zip")}


def warning_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning:")]


def assert_linked(run_dir: Path) -> None:
    """Exactly the run's checkpoints have RL Zoo's name, each the very file of the checkpoint."""
    checkpoints = {checkpoint_step(c): c for c in list_checkpoints(run_dir)}
    names = zoo_names(run_dir)
    assert sorted(names) == sorted(checkpoints), (sorted(names), sorted(checkpoints))
    for step, name in names.items():
        assert os.path.samefile(name, checkpoints[step] / "model.zip"), name
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".rl_model_")]  # no temporary link left


# ---------------------------------------------------------------- a trained run of each algorithm, rotated
@pytest.fixture(scope="module", params=["dqn", "qrdqn"])
def rotated_run(request, tmp_path_factory):
    """
    ``sb3_breakout.train --algo <algo> -n 1200 --save-freq 300 --keep-checkpoints 2`` with a running reward
    "solved" at the first game (solved_at -0.5, training goes on): checkpoints at 300, 600, 900, 1200 of
    which 300 and 600 were rotated away, plus the pinned one of the solved step (read-only).
    """
    algo = request.param
    root = tmp_path_factory.mktemp(f"zoo_links_{algo}")
    entry = cfg.load_entry(cfg.default_config(algo), ENV)
    entry.update(buffer_size=5_000, callback=[
        {"sb3_breakout.callbacks.LinearEpsilonCallback": dict(random_steps=200, decay_steps=2_000,
                                                               initial_eps=1.0, final_eps=0.1)},
        {"sb3_breakout.callbacks.RunningRewardCallback": dict(log_every=500, window=100, solved_at=-0.5,
                                                               stop_when_solved=False)},
    ])
    conf = write_conf(root, entry)
    result = run_cli(["-m", "sb3_breakout.train", "--algo", algo, "-conf", str(conf), "-f", "logs", "-n", "1200",
                      "--seed", "0", "--save-freq", "300", "--keep-checkpoints", "2", "--num-threads", "1"],
                     cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not warning_lines(result.stderr), result.stderr[-3000:]
    return algo, root / "logs", root / "logs" / algo / f"{ENV}_1"


def pinned_step(run_dir: Path) -> int:
    (pinned,) = [c for c in list_checkpoints(run_dir) if (c / PINNED).exists()]
    return checkpoint_step(pinned)


def test_the_kept_checkpoints_and_only_they_have_rl_zoo_names_as_hard_links(rotated_run):
    algo, _, run_dir = rotated_run
    kept = [checkpoint_step(c) for c in list_checkpoints(run_dir) if not (c / PINNED).exists()]
    assert kept == [900, 1200]  # --keep-checkpoints 2: the rotation removed 300 and 600 ...
    pinned = pinned_step(run_dir)
    assert sorted(zoo_names(run_dir)) == sorted({pinned, 900, 1200})  # ... and their names; the pinned one stays
    assert_linked(run_dir)
    for step, name in zoo_names(run_dir).items():
        model = checkpoint_dir(run_dir, step) / "model.zip"
        assert not name.is_symlink() and os.stat(model).st_nlink == 2  # one file, two names: no copy on disk
    for checkpoint in list_checkpoints(run_dir):  # the checkpoints themselves are as they were
        verify_checkpoint(checkpoint)
        assert not list(checkpoint.glob("rl_model_*"))


def test_rl_zoo_enjoy_loads_a_checkpoint_by_step_and_the_last_one(rotated_run, tmp_path):
    algo, logs, run_dir = rotated_run
    pinned = pinned_step(run_dir)
    for flags, step in ((["--load-checkpoint", str(pinned)], pinned), (["--load-last-checkpoint"], 1200)):
        enjoy = run_cli(["-m", "rl_zoo3.enjoy", "--algo", algo, "--env", ENV, "-f", str(logs), "--exp-id", "1",
                         *flags, "--no-render", "-n", "200", "--gym-packages", "sb3_breakout"], cwd=tmp_path)
        assert enjoy.returncode == 0, enjoy.stderr[-3000:]
        assert f"Loading {run_dir / f'rl_model_{step}_steps.zip'}" in enjoy.stdout, enjoy.stdout[-2000:]


def test_the_package_tools_take_rl_zoos_name_as_the_checkpoint_itself(rotated_run):
    """Given ``rl_model_<N>_steps.zip``, evaluate/record/ship read ``checkpoints/step_<N>`` (its label, its
    Monitor copies), as with --load-checkpoint N."""
    algo, _, run_dir = rotated_run
    target = runs.resolve_target(str(run_dir / "rl_model_900_steps.zip"))
    assert target.model_path == checkpoint_dir(run_dir, 900) / "model.zip" and target.label == "step_900"
    assert target.run_dir == run_dir and target.algo == algo


def test_rl_zoo_record_video_records_the_last_checkpoint(rotated_run, tmp_path):
    algo, logs, _ = rotated_run
    out = tmp_path / "video"
    video = run_cli(["-m", "rl_zoo3.record_video", "--algo", algo, "--env", ENV, "-f", str(logs), "--exp-id", "1",
                     "--load-last-checkpoint", "-n", "100", "-o", str(out)], cwd=tmp_path)
    assert video.returncode == 0, video.stderr[-3000:]
    (mp4,) = out.glob("*.mp4")
    assert "checkpoint-1200" in mp4.name and mp4.stat().st_size > 0


# ---------------------------------------------------------------- a kill between the two removals, then --resume
def test_resume_removes_names_of_gone_checkpoints_and_makes_missing_ones(tmp_path):
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    conf = write_conf(tmp_path, small_entry())
    first = run_cli(["-m", "sb3_breakout.train", "-conf", str(conf), "-f", "logs", "-n", "600", "--seed", "3",
                     "--save-freq", "300", "--keep-checkpoints", "2", "--num-threads", "1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(zoo_names(run_dir)) == [300, 600]
    # a rotation killed between its two removals leaves a name without its folder (here a hard link:
    # a whole model, that --load-checkpoint 300 would still load although the checkpoint is gone) ...
    shutil.rmtree(checkpoint_dir(run_dir, 300))
    # ... and a kill right after a checkpoint's rename, a name not made yet (and its temporary one)
    (run_dir / "rl_model_600_steps.zip").rename(run_dir / ".rl_model_600_steps.zip.tmp")
    resumed = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "-n", "900", "--num-threads", "1"],
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "from step_600: step 600 of 900" in resumed.stdout
    assert not warning_lines(resumed.stderr), resumed.stderr[-3000:]
    assert [checkpoint_step(c) for c in list_checkpoints(run_dir)] == [600, 900]
    assert sorted(zoo_names(run_dir)) == [600, 900]
    assert_linked(run_dir)


def test_a_damaged_model_loses_its_name_so_the_last_checkpoint_is_a_whole_one(rotated_run, tmp_path):
    """The names training puts at its start (zoo_links.sync of intact_models): a checkpoint whose model
    was damaged on disk keeps its folder (resume skips it with a warning) but not RL Zoo's name, and
    ``--load-last-checkpoint`` then finds the newest whole model."""
    algo, logs, run_dir = rotated_run
    copy_logs = tmp_path / "logs"
    shutil.copytree(logs, copy_logs)  # copies: the fixture's files stay whole
    run_copy = copy_logs / algo / run_dir.name
    steps = sorted(checkpoint_step(c) for c in list_checkpoints(run_copy))
    newest, before = steps[-1], steps[-2]
    for name in run_copy.glob("rl_model_*_steps.zip"):  # copytree made copies of the names: make them links again
        name.unlink()
    zoo_links.sync(run_copy, intact_models(run_copy))
    assert_linked(run_copy)
    model = checkpoint_dir(run_copy, newest) / "model.zip"
    with open(model, "r+b") as f:  # damaged in place: both names are this one file
        f.truncate(model.stat().st_size // 2)
    assert sorted(intact_models(run_copy)) == steps[:-1]
    zoo_links.sync(run_copy, intact_models(run_copy))
    assert sorted(zoo_names(run_copy)) == steps[:-1]
    assert model.exists()  # the checkpoint itself is left for resume to judge and skip
    last = Path(get_model_path(1, str(copy_logs), algo, EnvironmentName(ENV), load_last_checkpoint=True)[1])
    assert os.path.samefile(last, checkpoint_dir(run_copy, before) / "model.zip")
    # the package's own --load-last-checkpoint (evaluate, record) agrees
    assert os.path.samefile(runs.resolve_target(str(run_copy), load_last_checkpoint=True).model_path, last)
    # a checkpoint written before manifests: its zip is tested instead (a flipped byte in the data)
    older = checkpoint_dir(run_copy, before)
    (older / "manifest.json").unlink()
    assert before in intact_models(run_copy)
    data = bytearray((older / "model.zip").read_bytes())
    data[len(data) // 3] ^= 0xFF
    (older / "model.zip").write_bytes(bytes(data))
    assert before not in intact_models(run_copy)


# ---------------------------------------------------------------- in one process: the callback on the real game
def make_dqn(env):
    return DQN("CnnPolicy", env, buffer_size=1_000, learning_starts=10**9, batch_size=32, seed=0, device="cpu",
               policy_kwargs=dict(features_extractor_class=NatureCNN, net_arch=[]))


def zoo_layout(tmp_path: Path) -> tuple[Path, Path]:
    """An RL Zoo log folder and its run folder ``<log>/dqn/<env>_1`` (RL Zoo reads ``<env>/config.yml``)."""
    logs = tmp_path / "logs"
    run_dir = logs / "dqn" / f"{ENV}_1"
    run_dir.mkdir(parents=True)
    return logs, run_dir


def zoo_path(logs: Path, **kwargs) -> Path:
    """The model path RL Zoo's enjoy and record_video would load (its own function)."""
    return Path(get_model_path(1, str(logs), "dqn", EnvironmentName(ENV), **kwargs)[1])


def test_a_second_save_at_the_same_step_gives_the_name_to_the_new_model(tmp_path):
    logs, run_dir = zoo_layout(tmp_path)
    env = make_breakout_env("deepmind", seed=1)
    model = make_dqn(env)
    saver = CheckpointCallback(run_dir, save_freq=100, keep=2, verbose=0)
    model.learn(200, callback=saver)
    assert sorted(zoo_names(run_dir)) == [100, 200]
    before = os.stat(run_dir / "rl_model_200_steps.zip").st_ino
    with th.no_grad():  # the model changes, and is saved again at the same step (the .replaced path)
        for p in model.policy.parameters():
            p.add_(1.0)
    assert saver.save() == checkpoint_dir(run_dir, 200)
    assert_linked(run_dir)
    name = zoo_path(logs, load_last_checkpoint=True)
    assert name == run_dir / "rl_model_200_steps.zip" and os.stat(name).st_ino != before
    loaded = DQN.load(name, device="cpu")
    for a, b in zip(loaded.policy.parameters(), model.policy.parameters(), strict=True):
        assert th.equal(a, b)
    assert not (run_dir / "checkpoints" / "step_200.replaced").exists()
    env.close()


@pytest.mark.skipif(not (os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)), reason="no /dev/shm")
def test_checkpoints_on_another_filesystem_get_relative_symlinks_that_never_dangle(tmp_path):
    logs, run_dir = zoo_layout(tmp_path)
    elsewhere = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="sb3_breakout_test_"))
    try:
        if os.stat(elsewhere).st_dev == os.stat(run_dir).st_dev:
            pytest.skip("/dev/shm is on the run folder's filesystem: hard links work there")
        (run_dir / "checkpoints").symlink_to(elsewhere)  # checkpoints on another disk: no hard link (EXDEV)
        env = make_breakout_env("deepmind", seed=1)
        model = make_dqn(env)
        model.learn(300, callback=CheckpointCallback(run_dir, save_freq=100, keep=2, verbose=0))
        env.close()
        assert sorted(zoo_names(run_dir)) == [200, 300]  # 100's went with its checkpoint: none dangles
        for step, name in zoo_names(run_dir).items():
            assert name.is_symlink() and os.readlink(name) == f"checkpoints/step_{step}/model.zip"
        assert_linked(run_dir)
        assert zoo_path(logs, load_checkpoint="200") == run_dir / "rl_model_200_steps.zip"
        assert DQN.load(zoo_path(logs, load_last_checkpoint=True), device="cpu").num_timesteps == 300
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


class Obstacle(BaseCallback):
    """At step ``step``, puts a non-empty folder where RL Zoo's name of a checkpoint goes: no file can
    be renamed over it, so the link of that checkpoint cannot be made."""

    def __init__(self, path: Path, step: int):
        super().__init__()
        self.path, self.step = path, step

    def _on_step(self) -> bool:
        if self.num_timesteps == self.step:
            (self.path / "in_the_way").mkdir(parents=True)
        return True


def test_a_name_that_cannot_be_made_is_one_warning_and_the_checkpoint_and_training_go_on(tmp_path, capsys):
    _, run_dir = zoo_layout(tmp_path)
    env = make_breakout_env("deepmind", seed=1)
    model = make_dqn(env)
    in_the_way = run_dir / "rl_model_200_steps.zip"
    running = RunningRewardCallback(log_every=10_000)
    saver = CheckpointCallback(run_dir, save_freq=100, keep=2, running_reward=running, verbose=0)
    model.learn(300, callback=[running, Obstacle(in_the_way, 150), saver])
    env.close()
    err = capsys.readouterr().err
    warnings = warning_lines(err)
    assert len(warnings) == 1 and "rl_model_200_steps.zip" in warnings[0], err
    assert "the checkpoint is kept and training goes on" in warnings[0]
    assert model.num_timesteps == 300 and saver.failed_saves == 0
    assert [checkpoint_step(c) for c in list_checkpoints(run_dir)] == [200, 300]
    for checkpoint in list_checkpoints(run_dir):
        verify_checkpoint(checkpoint)
    assert in_the_way.is_dir() and os.path.samefile(run_dir / "rl_model_300_steps.zip",
                                                    checkpoint_dir(run_dir, 300) / "model.zip")
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".rl_model_")]
