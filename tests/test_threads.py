"""AdaptiveThreadsCallback: its decision rule, then a real short DQN run on Breakout that it steers."""

import pytest
import torch as th
from stable_baselines3 import DQN

from sb3_breakout.buffers import FrameStackReplayBuffer
from sb3_breakout.envs import make_breakout_env
from sb3_breakout.threads import AdaptiveThreadsCallback, ThreadChoice, thread_candidates
from sb3_breakout.torch_layers import NatureCNN


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = th.get_num_threads()
    yield
    th.set_num_threads(before)


def test_candidates_are_one_half_and_all_cores():
    assert thread_candidates(1) == [1]
    assert thread_candidates(2) == [1, 2]
    assert thread_candidates(8) == [1, 4, 8]
    assert thread_candidates()[0] == 1


def test_choice_probes_each_candidate_then_keeps_the_fastest_until_hold_or_drop():
    choice = ThreadChoice([1, 2, 4], hold_steps=1000, drop=0.6)
    assert choice.next_probe() == 1
    choice.rates.update({1: 50.0, 2: 80.0})
    assert choice.next_probe() == 4
    choice.rates[4] = 80.0
    assert choice.next_probe() is None
    assert choice.fastest() == 2  # the fewest threads among equally fast ones
    assert choice.choose() == 2 and choice.hold == 1000
    assert not choice.should_reprobe(held_steps=999, rate=49.0)  # 49 > 0.6 * 80
    assert choice.should_reprobe(held_steps=999, rate=47.0)  # the machine got busy
    assert choice.should_reprobe(held_steps=1000, rate=80.0)  # time to look again
    # a window ends at probe_steps, or earlier after probe_seconds (a collapsing count is cut short)
    assert not choice.window_done(steps=499, seconds=9.9) and choice.window_done(steps=500, seconds=1.0)
    assert choice.window_done(steps=3, seconds=10.0) and not choice.window_done(steps=0, seconds=60.0)


def test_fewer_threads_chosen_on_a_busy_machine_are_held_briefly_then_longer_as_probes_confirm():
    choice = ThreadChoice([1, 2], hold_steps=50_000, short_hold_steps=10_000)
    holds = []
    for rates in ({1: 80.0, 2: 8.0}, {1: 80.0, 2: 8.0}, {1: 80.0, 2: 8.0}, {1: 80.0, 2: 8.0}, {1: 80.0, 2: 8.0},
                  {1: 85.0, 2: 139.0}, {1: 80.0, 2: 8.0}):
        choice.rates.update(rates)
        holds.append((choice.choose(), choice.hold))
        assert not choice.should_reprobe(held_steps=choice.hold - 1, rate=rates[choice.chosen])
        assert choice.should_reprobe(held_steps=choice.hold, rate=rates[choice.chosen])
        choice.reprobe()
        assert choice.chosen is None and choice.rates == {}
    # 1 thread (while busy): 10k, then doubled while probes confirm it, capped at hold_steps; all
    # threads (quiet again): hold_steps; busy again: back to the short hold
    assert holds == [(1, 10_000), (1, 20_000), (1, 40_000), (1, 50_000), (1, 50_000), (2, 50_000), (1, 10_000)]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match=r"candidates=\[0, 2\]"):
        AdaptiveThreadsCallback(candidates=[0, 2])
    with pytest.raises(ValueError, match="drop=1.5"):
        AdaptiveThreadsCallback(drop=1.5)
    with pytest.raises(ValueError, match="short_hold_steps=0"):
        AdaptiveThreadsCallback(short_hold_steps=0)


def test_a_real_run_probes_both_counts_and_trains_on_the_fastest():
    env = make_breakout_env("deepmind", n_envs=1, seed=3)
    model = DQN("CnnPolicy", env, buffer_size=2000, learning_starts=50, batch_size=32, train_freq=4,
                replay_buffer_class=FrameStackReplayBuffer, device="cpu", seed=0,
                policy_kwargs=dict(features_extractor_class=NatureCNN, net_arch=[]))
    seen = []

    class Spy(AdaptiveThreadsCallback):
        def _on_step(self) -> bool:
            seen.append((self.num_timesteps, th.get_num_threads(), self.choice.chosen))
            return super()._on_step()

    # drop=0.01: only hold_steps ends a choice here (a busy test machine may slow a window by half)
    callback = Spy(candidates=[1, 2], probe_steps=60, hold_steps=200, warmup_steps=10, drop=0.01)
    model.learn(600, callback=callback)
    env.close()
    history = callback.history
    # round 1: 1 thread then 2 threads timed (after learning starts), then the faster one held
    assert [threads for _, threads, _ in history[:2]] == [1, 2]
    assert all(step > 50 for step, _, _ in history)
    first = {threads: rate for _, threads, rate in history[:2]}
    best = max(sorted(first), key=first.get)
    start = next(i for i, (_, _, chosen) in enumerate(seen) if chosen is not None)
    end = next((i for i in range(start, len(seen)) if seen[i][2] is None), len(seen))
    held = [(step, threads) for step, threads, _ in seen[start:end]]
    assert len(held) >= 200 and all(threads == best for _, threads in held)
    # after hold_steps of the choice, both are probed again
    later = [threads for step, threads, _ in history[2:] if step > held[0][0] + 200]
    assert set(later) == {1, 2}
    assert not th.isnan(next(model.q_net.parameters())).any()
