"""
Parallel games (n_envs > 1): train_freq in SB3's unit (vector steps), the same updates under both trainers;
target syncs, epsilon and resume counted in agent steps; runs of the older rewriting resume as trained.
"""

import argparse
import re

import pytest
import torch as th
import yaml
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback

from conftest import ENV, run_cli, small_entry, write_conf
from sb3_breakout.callbacks import NotebookEpsilonSchedule
from sb3_breakout.config import ConfigError
from sb3_breakout.parallel import agent_steps_per_update, check_parallel, describe_schedule, vector_step_schedule
from sb3_breakout.train import BreakoutExperimentManager


@pytest.mark.parametrize("n_envs, expected", [(1, (4, 1)), (2, (2, 1)), (3, (4, 3)), (4, (1, 1)), (8, (1, 2)),
                                              (16, (1, 4))])
def test_one_update_per_four_transitions_whatever_n_envs(n_envs, expected):
    train_freq, gradient_steps = vector_step_schedule(4, 1, n_envs)
    assert (train_freq, gradient_steps) == expected
    assert gradient_steps / (train_freq * n_envs) == 1 / 4  # updates per transition, as with one game
    assert vector_step_schedule(4, -1, 2) == (1, 2)  # -1: one update per agent step
    entry = {"n_envs": n_envs, "train_freq": train_freq, "gradient_steps": gradient_steps}
    assert agent_steps_per_update(entry) == 4


def test_train_freq_is_read_in_vector_steps():
    """The unit SB3 and rl_zoo3.train use: 4 games with train_freq 4 update once per 16 agent steps."""
    assert agent_steps_per_update({"n_envs": 4, "train_freq": 4}) == 16
    assert agent_steps_per_update({"n_envs": 4, "train_freq": [1, "step"], "gradient_steps": 1}) == 4
    assert agent_steps_per_update({"train_freq": 4}) == 4 and agent_steps_per_update({}) == 4
    assert agent_steps_per_update({"n_envs": 2, "train_freq": [1, "episode"]}) is None
    assert describe_schedule({"n_envs": 1, "train_freq": 4}) is None
    assert describe_schedule({"n_envs": 4, "train_freq": 1, "gradient_steps": 1}) == (
        "4 games: train_freq 1 vector steps (SB3's unit), gradient_steps 1: one update per 4 agent steps")
    # a replay-ratio schedule in the callback list, as RL Zoo's YAML names it (with keywords, or bare)
    scheduled = {"n_envs": 4, "train_freq": 2, "callback": [
        "sb3_breakout.callbacks.RunningRewardCallback",
        {"sb3_breakout.callbacks.ReplayRatioScheduleCallback": {"initial": 1, "final": 2, "until": 150_000}}]}
    assert describe_schedule(scheduled) == (
        "4 games: train_freq 2 vector steps (SB3's unit), gradient_steps 1: one update per 8 agent steps; "
        "one per 4 before agent step 150,000 (ReplayRatioScheduleCallback, train_freq 1)")
    bare = {"n_envs": 4, "train_freq": 2, "callback": "sb3_breakout.callbacks.ReplayRatioScheduleCallback"}
    assert describe_schedule(bare) == describe_schedule(scheduled)  # the callback's defaults
    # a run resumed before the switch: its zip holds train_freq 1, the line still names the entry's 2
    assert describe_schedule({**scheduled, "train_freq": 1}) == describe_schedule(scheduled)


def test_target_interval_not_a_multiple_of_n_envs_is_refused(tmp_path):
    check_parallel({"n_envs": 4, "target_update_interval": 10_000})
    with pytest.raises(ConfigError, match="train_freq='4' is not allowed"):
        check_parallel({"n_envs": 2, "train_freq": "4"})
    conf = write_conf(tmp_path, small_entry(n_envs=3))
    result = run_cli(["-m", "sb3_breakout.train", "-conf", str(conf), "-n", "100", "-f", "logs"], cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "logs").exists()
    assert result.stderr.strip().splitlines() == [
        "error: target_update_interval=10000 with n_envs=3: SB3 would sync the target network every 9999 agent "
        "steps; allowed: an n_envs that divides 10000"]


class Probe(BaseCallback):
    """Records target-network syncs (agent step of the sync) and epsilon, read from the real learner."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[int] = []
        self.eps: dict[int, float] = {}
        self._last = None

    def _on_step(self) -> bool:
        n = self.training_env.num_envs
        weight = self.model.q_net_target.q_net[0].weight.detach().clone()
        # DQN._on_step (target sync, epsilon) runs after the callbacks: what we see was done at the last step
        if self._last is not None and not th.equal(weight, self._last):
            self.syncs.append(self.num_timesteps - n)
        self._last = weight
        self.eps[self.num_timesteps - n] = self.model.exploration_rate
        return True


def test_four_games_train_as_one_in_agent_steps(tmp_path):
    """2,000 agent steps with 4 games and train_freq 1 (vector steps): the same updates, target syncs and
    epsilon as the recipe with one game and train_freq 4."""
    conf = write_conf(tmp_path, small_entry(n_envs=4, train_freq=1, target_update_interval=400))
    threads = th.get_num_threads()
    th.set_num_threads(1)
    try:
        exp = BreakoutExperimentManager(argparse.Namespace(), "dqn", ENV, str(tmp_path / "logs"), seed=0, verbose=0,
                                        n_timesteps=2000, eval_freq=-1, device="cpu", config=str(conf))
        model, _ = exp.setup_experiment()
        probe = Probe()
        model.learn(2000, callback=[*exp.callbacks, probe])
        model.env.close()
    finally:
        th.set_num_threads(threads)
    assert model.num_timesteps == 2000 and model.n_envs == 4
    assert (model.train_freq.frequency, model.gradient_steps) == (1, 1)
    # one game: an update at every 4th agent step once num_timesteps > learning_starts (32): 36, 40, ..., 2000
    assert model._n_updates == len(range(36, 2001, 4)) == 492
    assert probe.syncs == [400, 800, 1200, 1600]  # target_update_interval in agent steps, not vector steps
    schedule = NotebookEpsilonSchedule(random_steps=200, decay_steps=2_000, initial_eps=1.0, final_eps=0.1)
    for step in (100, 196, 200, 1000, 1996):
        assert probe.eps[step] == pytest.approx(schedule.value(step), abs=1e-9), step
    # the run's config.yml keeps the entry as written: the numbers the model trained with
    saved = yaml.safe_load((tmp_path / "logs" / "dqn" / f"{ENV}_1" / ENV / "config.yml").read_text())
    assert saved["train_freq"] == 1 and saved["gradient_steps"] == 1


def train_with_both_trainers(conf, tmp_path):
    """2,000 agent steps of ``conf`` under sb3_breakout.train (in ``ours/``) and rl_zoo3.train (``zoo/``):
    our trainer's finished process and the two saved models' update counts."""
    ours = run_cli(["-m", "sb3_breakout.train", "-conf", str(conf), "-n", "2000", "--seed", "0", "-f", "ours",
                    "--num-threads", "1"], cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr[-3000:]
    zoo = run_cli(["-m", "rl_zoo3.train", "--algo", "dqn", "--env", ENV, "-conf", str(conf), "-n", "2000",
                   "--seed", "0", "-f", "zoo", "--eval-freq", "-1", "--num-threads", "1"], cwd=tmp_path)
    assert zoo.returncode == 0, zoo.stderr[-3000:]
    return ours, [DQN.load(tmp_path / folder / "dqn" / f"{ENV}_1" / f"{ENV}.zip", device="cpu")._n_updates
                  for folder in ("ours", "zoo")]


def test_both_trainers_make_the_same_updates_from_one_file(tmp_path):
    """One YAML, two trainers: a 4-game entry gives the same update count under sb3_breakout.train and
    rl_zoo3.train (before, this package rewrote train_freq for n_envs in its own trainer only: 450 updates
    against 113 from one file)."""
    conf = write_conf(tmp_path, small_entry(n_envs=4, train_freq=1, target_update_interval=400,
                                            learning_starts=200))
    ours, counts = train_with_both_trainers(conf, tmp_path)
    assert "4 games: train_freq 1 vector steps (SB3's unit), gradient_steps 1: one update per 4 agent steps" \
        in ours.stdout
    assert counts[0] == counts[1] == len(range(204, 2001, 4)) == 450  # num_timesteps > 200, every 4 agent steps


def test_both_trainers_follow_the_replay_ratio_schedule_from_one_file(tmp_path):
    """ReplayRatioScheduleCallback is a YAML callback: rl_zoo3.train builds it as sb3_breakout.train does,
    so one file makes the same updates under both (one per 4 agent steps until 1,000, then one per 8)."""
    entry = small_entry(n_envs=4, train_freq=2, target_update_interval=400, learning_starts=200)
    entry["callback"] = [{"sb3_breakout.callbacks.ReplayRatioScheduleCallback": dict(initial=1, final=2, until=1000)},
                         *entry["callback"]]
    ours, counts = train_with_both_trainers(write_conf(tmp_path, entry), tmp_path)
    assert "one update per 8 agent steps; one per 4 before agent step 1,000" in ours.stdout
    assert "ReplayRatioScheduleCallback: train_freq 1 -> 2 vector steps at agent step 1,00" in ours.stdout
    # every 4 agent steps after step 200 up to the switch, then every 8 (the entry's train_freq 2 of 4 games)
    assert counts[0] == counts[1] == len(range(204, 1001, 4)) + len(range(1008, 2001, 8)) == 325


def test_a_run_of_the_older_rewriting_resumes_as_it_was_trained(tmp_path):
    """Runs of earlier versions say train_freq 4 with 4 games in config.yml and trained with SB3's 1 (the
    package rewrote it): a resume goes on with the checkpoint model's schedule, not 4x fewer updates."""
    conf = write_conf(tmp_path, small_entry(n_envs=4, train_freq=1, target_update_interval=400))
    first = run_cli(["-m", "sb3_breakout.train", "-conf", str(conf), "-n", "1000", "--seed", "0", "-f", "logs",
                     "--save-freq", "1000", "--num-threads", "1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    config = run / ENV / "config.yml"
    config.write_text(config.read_text().replace("train_freq: 1", "train_freq: 4"))  # as the older version wrote
    second = run_cli(["-m", "sb3_breakout.train", "--resume", str(run), "-n", "2000", "--num-threads", "1"],
                     cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    model = DQN.load(run / f"{ENV}.zip", device="cpu")
    assert (model.train_freq.frequency, model.gradient_steps) == (1, 1)
    assert model._n_updates == 492  # as an uninterrupted run: one update per 4 agent steps after step 32


def test_resume_of_a_four_game_run_keeps_the_ratio(tmp_path):
    conf = write_conf(tmp_path, small_entry(n_envs=4, train_freq=1, target_update_interval=400))
    first = run_cli(["-m", "sb3_breakout.train", "-conf", str(conf), "-n", "1000", "--seed", "0", "-f", "logs",
                     "--save-freq", "1000", "--num-threads", "1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # the running-reward log (log_every 500) counts agent steps, all four games together
    assert re.findall(r"frame count (\d+)", first.stdout) == ["500", "1000"], first.stdout[-2000:]
    run = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    assert (run / "checkpoints" / "step_1000").is_dir()
    second = run_cli(["-m", "sb3_breakout.train", "--resume", str(run), "-n", "2000", "--num-threads", "1"],
                     cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.findall(r"frame count (\d+)", second.stdout) == ["1500", "2000"], second.stdout[-2000:]
    model = DQN.load(run / f"{ENV}.zip", device="cpu")
    assert model.num_timesteps == 2000
    assert (model.train_freq.frequency, model.gradient_steps) == (1, 1)
    assert model._n_updates == 492  # as an uninterrupted run of one game
    games = sum(len((run / f"{i}.monitor.csv").read_text().splitlines()) - 2 for i in range(4))
    assert games >= 4  # four Monitor files, appended to by the resumed run
