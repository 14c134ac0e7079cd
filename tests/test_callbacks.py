"""The callbacks inside a real DQN.learn on the real game."""

import re

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback

from sb3_breakout.buffers import FrameStackReplayBuffer
from sb3_breakout.callbacks import (
    LinearEpsilonCallback,
    NStepScheduleCallback,
    ReplayRatioScheduleCallback,
    RunningRewardCallback,
)
from sb3_breakout.envs import make_breakout_env
from sb3_breakout.torch_layers import NatureCNN

PREFERRED = 2


class ActionProbe(BaseCallback):
    """Records, for every step, (t, epsilon used for the action, action, logged epsilon)."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def _on_step(self):
        t = self.num_timesteps - 1  # steps taken before this action
        logged = self.logger.name_to_value.get("rollout/exploration_rate")
        self.rows.append((t, self.model.exploration_rate, int(self.locals["actions"][0]), logged))
        return True


def make_dqn(env, **kwargs):
    params = dict(buffer_size=2_000, learning_starts=32, batch_size=32, train_freq=4, gradient_steps=1,
                  policy_kwargs=dict(features_extractor_class=NatureCNN, net_arch=[]), seed=0, device="cpu")
    params.update(kwargs)
    return DQN("CnnPolicy", env, **params)


def expected_eps(t, random_steps=500, decay_steps=2_000, initial=1.0, final=0.1):
    return 1.0 if t < random_steps else max(final, initial - (initial - final) * t / decay_steps)


def test_epsilon_schedule_governs_dqn_actions():
    env = make_breakout_env("deepmind", seed=0)
    # lr 0 keeps the network's preference for one action fixed; train rarely to keep the test quick
    model = make_dqn(env, learning_rate=0.0, train_freq=500)
    with th.no_grad():
        head = model.q_net.q_net[-1]
        head.weight.zero_()
        head.bias.copy_(th.tensor([0.0, 0.0, 100.0, 0.0]))
    model.q_net_target.load_state_dict(model.q_net.state_dict())
    probe = ActionProbe()
    eps_cb = LinearEpsilonCallback(random_steps=500, decay_steps=2_000, initial_eps=1.0, final_eps=0.1)
    model.learn(4_000, callback=[eps_cb, probe])
    env.close()

    rows = probe.rows
    assert len(rows) == 4_000
    for t, eps, _, logged in rows[1:]:  # row 0's epsilon was set at training start, before any step
        assert eps == pytest.approx(expected_eps(t)), t
        assert logged == pytest.approx(expected_eps(t + 1))  # logged after the step, for the next action
    for t in (0, 499, 500, 1000, 1999, 2000, 3999):
        assert rows[t][1] == pytest.approx(expected_eps(t))

    # random phase after learning_starts: uniform although the network always prefers action 2
    random_actions = np.array([a for t, _, a, _ in rows if 32 <= t < 500])
    counts = np.bincount(random_actions, minlength=4)
    expected = len(random_actions) / 4
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 16.27, counts  # p = 0.001 for 3 degrees of freedom
    # at epsilon 0.1 the greedy action dominates: 1 - 0.1 * 3/4 = 0.925 of the actions
    late = np.array([a for t, _, a, _ in rows if t >= 2_000])
    assert 0.88 < (late == PREFERRED).mean() < 0.97
    # the schedule survives a save: it is a small object, not a closure over the model
    assert model.exploration_schedule is eps_cb.schedule
    assert model.exploration_schedule(1.0 - 1000 / model._total_timesteps) == pytest.approx(expected_eps(1000))


def test_running_reward_line_and_solved_stop(capsys):
    env = make_breakout_env("deepmind", seed=1)
    model = make_dqn(env, learning_starts=10**9)  # random play only: the callback is under test
    running = RunningRewardCallback(log_every=200, window=100, solved_at=-0.5)
    model.learn(20_000, callback=running)
    out = capsys.readouterr().out
    # a finished game has a true score >= 0 > -0.5: stops at the first game
    assert running.solved and running.episode_count == 1
    assert model.num_timesteps < 20_000
    assert f"Solved at episode 1, step {running.solved_step}!" in out
    assert running.solved_step == model.num_timesteps
    lines = re.findall(r"running reward: (-?\d+\.\d\d) at episode (\d+), frame count (\d+)", out)
    assert lines
    assert all(int(frames) % 200 == 0 for _, _, frames in lines[:-1])
    monitor_scores = env.env_method("get_episode_rewards")[0]
    assert float(lines[-1][0]) == pytest.approx(np.mean(monitor_scores), abs=0.005)
    assert int(lines[-1][1]) == len(monitor_scores) == 1
    env.close()


def test_stop_when_solved_false_trains_on_and_keeps_the_solved_checkpoint(tmp_path):
    from sb3_breakout.checkpoint import CheckpointCallback
    from sb3_breakout.checkpoint_files import PINNED, list_checkpoints

    env = make_breakout_env("deepmind", seed=1)
    model = make_dqn(env, learning_starts=10**9)
    running = RunningRewardCallback(log_every=10_000, window=100, solved_at=-0.5, stop_when_solved=False)
    saver = CheckpointCallback(tmp_path, save_freq=500, keep=1, running_reward=running, verbose=0)
    model.learn(3_000, callback=[running, saver])
    assert model.num_timesteps == 3_000  # went on past "solved"
    assert running.solved and 0 < running.solved_step < 3_000
    kept = list_checkpoints(tmp_path)
    pinned = [c for c in kept if (c / PINNED).exists()]
    # the solved step's checkpoint (written at the next rollout start) outlives keep=1, besides the newest
    assert len(pinned) == 1 and 0 <= int(pinned[0].name[5:]) - running.solved_step < 4
    assert [int(c.name[5:]) for c in kept if c not in pinned] == [3_000]
    env.close()


def test_running_reward_is_the_mean_true_score_and_max_episodes_stops():
    env = make_breakout_env("deepmind", seed=2)
    model = make_dqn(env, learning_starts=10**9)
    running = RunningRewardCallback(log_every=10_000, window=2, max_episodes=3)
    model.learn(50_000, callback=running)
    scores = env.env_method("get_episode_rewards")[0]
    assert running.episode_count == 3 and len(scores) == 3
    assert running.running_reward == pytest.approx(np.mean(scores[-2:]))
    assert not running.solved
    env.close()


@pytest.mark.parametrize("kwargs, message", [
    (dict(initial_eps=1.5), "initial_eps=1.5"),
    (dict(final_eps=-0.1), "final_eps=-0.1"),
    (dict(initial_eps=0.1, final_eps=0.5), "final_eps=0.5 must be <= initial_eps=0.1"),
    (dict(decay_steps=0), "decay_steps=0"),
    (dict(random_steps=-1), "random_steps=-1"),
])
def test_bad_epsilon_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LinearEpsilonCallback(**kwargs)


class HorizonProbe(BaseCallback):
    """Records (steps taken, the buffer's n-step horizon) after every step, and the sampled discounts."""

    def __init__(self):
        super().__init__()
        self.rows, self.discounts = [], {}

    def _on_step(self):
        buffer = self.model.replay_buffer
        self.rows.append((self.num_timesteps, buffer.n_steps))
        if buffer.size() > 64:
            self.discounts.setdefault(buffer.n_steps, set()).update(
                np.round(buffer.sample(64).discounts.numpy().ravel(), 6).tolist())
        return True


def test_n_step_schedule_anneals_the_returns_the_learner_samples():
    from sb3_contrib import QRDQN

    env = make_breakout_env("deepmind", seed=3)
    model = QRDQN("CnnPolicy", env, buffer_size=3_000, learning_starts=100, batch_size=32, train_freq=4,
                  replay_buffer_class=FrameStackReplayBuffer, replay_buffer_kwargs=dict(n_steps=3, gamma=0.9),
                  gamma=0.9, policy_kwargs=dict(features_extractor_class=NatureCNN, net_arch=[], n_quantiles=8),
                  seed=0, device="cpu")
    schedule = NStepScheduleCallback(initial=10, final=3, start=200, end=600)
    probe = HorizonProbe()
    model.learn(1_000, callback=[schedule, probe])
    env.close()

    horizons = dict(probe.rows)
    assert horizons[100] == 10 and horizons[200] == 10 and horizons[1_000] == 3
    assert horizons[400] == round(10 * 0.3 ** 0.5) == 5  # exponential in between: 10 * (3/10) ** fraction
    values = list(horizons.values())
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # never grows
    # the learner's samples carry gamma ** k for up to the horizon of their step, never more
    assert max(probe.discounts[10]) == pytest.approx(0.9, rel=1e-5)
    assert min(probe.discounts[10]) == pytest.approx(0.9 ** 10, rel=1e-5)
    assert min(probe.discounts[3]) == pytest.approx(0.9 ** 3, rel=1e-5)


def test_n_step_schedule_needs_a_buffer_with_a_horizon_and_sane_bounds():
    env = make_breakout_env("deepmind", seed=0)
    model = make_dqn(env)  # SB3's own ReplayBuffer: no n_steps
    with pytest.raises(ValueError, match="needs a replay buffer with n_steps"):
        model.learn(10, callback=NStepScheduleCallback())
    env.close()
    from sb3_contrib import QRDQN

    env = make_breakout_env("deepmind", seed=0)
    model = QRDQN("CnnPolicy", env, buffer_size=500, gamma=0.99, replay_buffer_class=FrameStackReplayBuffer,
                  replay_buffer_kwargs=dict(n_steps=3, gamma=0.9), policy_kwargs=dict(n_quantiles=4), device="cpu")
    with pytest.raises(ValueError, match=re.escape("the replay buffer's gamma=0.9 is not the learner's gamma=0.99")):
        model.learn(10, callback=NStepScheduleCallback())
    env.close()
    with pytest.raises(ValueError, match=re.escape("end=100 > start")):
        NStepScheduleCallback(start=200, end=100)
    with pytest.raises(ValueError, match=re.escape("final=0")):
        NStepScheduleCallback(final=0)


class UpdateProbe(BaseCallback):
    """Records (agent steps, updates made so far, train_freq) at every vector step."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def _on_step(self):
        self.rows.append((self.num_timesteps, self.model._n_updates, self.model.train_freq.frequency))
        return True


def updates_between(rows, start, end):
    at = {t: n for t, n, _ in rows}
    return at[end] - at[start]


def test_replay_ratio_schedule_makes_more_updates_before_its_step_and_resumes_where_it_stopped():
    env = make_breakout_env("deepmind", n_envs=4, seed=0)
    model = make_dqn(env, train_freq=2)  # the entry's own: one update per 8 agent steps with 4 games
    probe = UpdateProbe()
    model.learn(300, callback=[ReplayRatioScheduleCallback(initial=1, final=2, until=400), probe])
    assert model.train_freq.frequency == 1  # stopped before its step: the zip would hold the early value
    assert updates_between(probe.rows, 100, 300) == 50  # one update per vector step of 4 games
    # a resumed run (the model holds train_freq 1) switches at step 400 all the same
    model.learn(700, reset_num_timesteps=False,
                callback=[ReplayRatioScheduleCallback(initial=1, final=2, until=400), probe])
    env.close()
    assert all(freq == 1 for t, _, freq in probe.rows if t < 400)
    assert all(freq == 2 for t, _, freq in probe.rows if t >= 408)  # the next collection at the latest
    assert updates_between(probe.rows, 500, 1000) == 62  # one per 8 agent steps from then on
    assert model.train_freq.frequency == 2


def test_replay_ratio_schedule_refuses_a_final_value_that_is_not_the_entrys():
    env = make_breakout_env("deepmind", seed=0)
    model = make_dqn(env, train_freq=4)
    with pytest.raises(ValueError, match=re.escape("final=2 is not the learner's train_freq=4; pass final=4")):
        model.learn(10, callback=ReplayRatioScheduleCallback(initial=1, final=2))
    env.close()
    with pytest.raises(ValueError, match=re.escape("initial=0")):
        ReplayRatioScheduleCallback(initial=0)
    with pytest.raises(ValueError, match=re.escape("until=-1")):
        ReplayRatioScheduleCallback(until=-1)
