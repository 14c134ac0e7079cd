"""Parallel games (n_envs > 1) keep the recipe counted in agent steps: updates, target syncs, epsilon, resume."""

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
from sb3_breakout.parallel import check_parallel, per_vector_step, vector_step_schedule
from sb3_breakout.train import BreakoutExperimentManager


@pytest.mark.parametrize("n_envs, expected", [(1, (4, 1)), (2, (2, 1)), (3, (4, 3)), (4, (1, 1)), (8, (1, 2)),
                                              (16, (1, 4))])
def test_one_update_per_four_transitions_whatever_n_envs(n_envs, expected):
    train_freq, gradient_steps = vector_step_schedule(4, 1, n_envs)
    assert (train_freq, gradient_steps) == expected
    assert gradient_steps / (train_freq * n_envs) == 1 / 4  # updates per transition, as with one game
    assert vector_step_schedule(4, -1, 2) == (1, 2)  # -1: one update per agent step
    entry = per_vector_step({"n_envs": n_envs, "train_freq": 4, "gradient_steps": 1})
    assert (entry["train_freq"], entry["gradient_steps"]) == expected


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
    """2,000 agent steps with 4 games: the same updates, target syncs and epsilon as the recipe with one."""
    conf = write_conf(tmp_path, small_entry(n_envs=4, target_update_interval=400))
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
    # the run's config.yml keeps the recipe (agent steps), not SB3's vector-step numbers
    saved = yaml.safe_load((tmp_path / "logs" / "dqn" / f"{ENV}_1" / ENV / "config.yml").read_text())
    assert saved["train_freq"] == 4 and saved["gradient_steps"] == 1


def test_resume_of_a_four_game_run_keeps_the_ratio(tmp_path):
    conf = write_conf(tmp_path, small_entry(n_envs=4, target_update_interval=400))
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
    assert (model.train_freq.frequency, model.gradient_steps) == (1, 1)  # rewritten once, not twice
    assert model._n_updates == 492  # as an uninterrupted run of one game
    games = sum(len((run / f"{i}.monitor.csv").read_text().splitlines()) - 2 for i in range(4))
    assert games >= 4  # four Monitor files, appended to by the resumed run
