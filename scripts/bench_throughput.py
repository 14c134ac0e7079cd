"""
Training throughput on this machine, in one run: agent steps/s in the learning phase of

  (a) the PyTorch notebook's loop (Python lists of float tensors, per-step tensor conversions),
  (b) plain SB3 DQN, ``CnnPolicy``, RL Zoo's Atari settings,
  (c) sb3_breakout's default training (``hyperparams/dqn.yml``), each speed option alone, ``bf16: auto``,
      2, 4 and 8 games in parallel (4 and 8 also with ``bf16: auto``) at the recipe's replay ratio (one
      update of batch 32 per 4 transitions, :mod:`sb3_breakout.parallel`), and the same on ALE's C++ vector env (``ale``
      backend, :mod:`sb3_breakout.vector_env`), and with ``--device cuda`` only, the frames of the replay
      buffer in GPU memory (``c-gpu-frames``: :mod:`sb3_breakout.device_buffer`),
  QR-DQN: (b-qr) plain sb3-contrib QR-DQN with RL Zoo's Atari settings and (c-qr) sb3_breakout's
      ``hyperparams/qrdqn.yml`` (same pieces as (c), and the quantile loss of
      :mod:`sb3_breakout.quantile_loss`), the fast entry as shipped (one update per 8 agent steps) and
      its levers: 1 update per 4 (``c-qr-fast-rr4``, the entry before) or per 16 agent steps, batch 64,
      50 quantiles, prioritized replay (``c-qr-fast-per``: :mod:`sb3_breakout.prioritized`), 8 games
      at the same replay ratio (``c-qr-fast-n8``), DrQ's random shift (``c-qr-fast-drq``), Double DQN's
      target (``c-qr-fast-dq``: :mod:`sb3_breakout.double_q`),

then, for the hardware, (d) the time of one DQN and one QR-DQN update (batch 32; QR-DQN with
sb3-contrib's loss and with this package's) in the default
configuration and the DQN update's FLOP/s, counted by ``torch.utils.flop_counter``, next to (e) the CPU's
measured peak: large fp32 and bf16 matrix products timed in the same run, and (f) the env alone: agent
steps/s of random play for 1 to 16 games, Python wrappers (``DummyVecEnv``) against ALE's vector env.
Every speed row is printed with its ratio to plain SB3 (b) measured in the same run; only ratios
within one run mean something on a machine shared with other work.

Every configuration runs in its own subprocess (one at a time), so its peak RSS is its own. All of
them act with the same epsilon (0.1, the notebooks' final value). The rows of a profile (``c-fast``,
``c-qr-fast*``) train as their entry says (the QR-DQN fast entry: one update of batch 32 per 8 agent
steps); the others every 4 agent steps with batch 32, so the network costs the same per step. Each
warms up for ``--warmup`` steps in the learning phase before ``--steps`` timed steps.

    python scripts/bench_throughput.py                 # all, ~10 minutes here
    python scripts/bench_throughput.py --steps 1000    # quicker, noisier
    python scripts/bench_throughput.py --algo qrdqn    # the QR-DQN rows only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch as th

EPS = 0.1
BATCH = 32
BUFFER = 100_000  # transitions in every learner's replay buffer (--buffer-size)
DEVICE = "cpu"  # (b) and (c) only: --device cuda times them on a GPU; (a), (d), (e) are CPU figures


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- (a) the notebook's data structures
def run_notebook(warmup: int, steps: int) -> float:
    """The loop of ``pytorch_dqn_breakout_notebook`` (learning phase), on the same env as the others."""
    import torch.nn as nn
    import torch.nn.functional as F

    from sb3_breakout.envs import make_breakout_env

    env = make_breakout_env("deepmind", seed=0)
    n_actions = 4

    def net() -> nn.Module:  # the notebook's DQN module
        return nn.Sequential(
            nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(), nn.Conv2d(64, 64, 3, 1),
            nn.ReLU(), nn.Flatten(), nn.Linear(7 * 7 * 64, 512), nn.Linear(512, n_actions),
        )

    model, model_target = net(), net()
    model_target.load_state_dict(model.state_dict())
    optimizer = th.optim.Adam(model.parameters(), lr=0.00025)
    action_history, state_history, state_next_history, rewards_history, done_history = [], [], [], [], []
    state = th.FloatTensor(env.reset() / 255.0)  # wrap_deepmind(scale=True): float frames
    frame_count, t0 = 0, 0.0
    while frame_count < warmup + steps:
        if frame_count == warmup:
            t0 = time.perf_counter()
        frame_count += 1
        if EPS > np.random.rand(1)[0]:
            action = np.random.choice(n_actions)
        else:
            action = model(state).data.max(1)[1].item()
        state_next, reward, done, _ = env.step(np.array([action]))
        state_next = th.FloatTensor(state_next / 255.0)
        action_history.append(action)
        state_history.append(state.detach().cpu())
        state_next_history.append(state_next)
        done_history.append(bool(done[0]))
        rewards_history.append(float(reward[0]))
        state = state_next
        if frame_count % 4 == 0 and len(done_history) > BATCH:
            indices = np.random.choice(range(len(done_history)), size=BATCH)
            state_sample = th.cat([state_history[i] for i in indices])
            state_next_sample = th.cat([state_next_history[i] for i in indices])
            rewards_sample = [rewards_history[i] for i in indices]
            action_sample = [action_history[i] for i in indices]
            done_sample = th.FloatTensor([float(done_history[i]) for i in indices])
            future_rewards = model_target(state_next_sample)
            values, _ = th.max(future_rewards, 1)
            updated_q_values = rewards_sample + 0.99 * values.detach().cpu().numpy()
            updated_q_values = th.tensor(updated_q_values) * (1 - done_sample) - done_sample
            masks = F.one_hot(th.tensor(action_sample), n_actions)
            optimizer.zero_grad()
            q_action = th.sum(th.multiply(model(state_sample), masks), 1, dtype=th.float64)
            loss = F.smooth_l1_loss(updated_q_values, q_action)
            loss.backward()
            th.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        if frame_count % 10_000 == 0:
            model_target.load_state_dict(model.state_dict())
    return steps / (time.perf_counter() - t0)


# ---------------------------------------------------------------- (b), (c): SB3 learners
def touch_buffer(buffer) -> None:
    """Write every page of the replay buffer's arrays, so that peak RSS counts a full buffer
    (numpy's zeros are allocated lazily: a buffer filled only by the timed steps would look small)."""
    for value in vars(buffer).values():
        if isinstance(value, np.ndarray) and value.size:
            for start in range(0, len(value), 4096):  # rewrite in place, contents unchanged
                value[start:start + 4096] = value[start:start + 4096].copy()


class StepTimer:
    """Wall time of the steps after ``warmup``, as an SB3 callback."""

    def __new__(cls, warmup: int):
        from stable_baselines3.common.callbacks import BaseCallback

        class _Timer(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.t0 = None
                self.start_step = 0

            def _on_step(self) -> bool:
                if self.t0 is None and self.num_timesteps >= warmup:
                    self.t0, self.start_step = time.perf_counter(), self.num_timesteps
                return True

            def rate(self) -> float:
                return (self.num_timesteps - self.start_step) / (time.perf_counter() - self.t0)

        return _Timer()


def run_sb3_zoo(warmup: int, steps: int, algo: str = "dqn") -> float:
    """
    Plain SB3 DQN (or sb3-contrib QR-DQN) with RL Zoo's Atari hyperparameters (learning starts early so
    that all steps learn; QR-DQN: sb3-contrib's defaults, 200 quantiles, lr 5e-5, target sync 10,000).
    """
    from stable_baselines3 import DQN

    from sb3_breakout.envs import make_breakout_env

    env = make_breakout_env("deepmind", seed=0)
    common = dict(buffer_size=BUFFER, batch_size=BATCH, learning_starts=BATCH, train_freq=4, gradient_steps=1,
                  exploration_initial_eps=EPS, exploration_final_eps=EPS, optimize_memory_usage=False, seed=0,
                  device=DEVICE)
    if algo == "qrdqn":
        from sb3_contrib import QRDQN

        model = QRDQN("CnnPolicy", env, **common)
    else:
        model = DQN("CnnPolicy", env, learning_rate=1e-4, target_update_interval=1000, **common)
    touch_buffer(model.replay_buffer)
    timer = StepTimer(warmup)
    model.learn(warmup + steps, callback=timer)
    return timer.rate()


def run_ours(warmup: int, steps: int, overrides: dict, algo: str = "dqn") -> tuple[float, str]:
    """
    A YAML entry of ``algo`` (the default one, or ``overrides["profile"]``'s), built by the training CLI's
    ExperimentManager with ``overrides`` on top. A row that plays ``n_envs`` games writes ``train_freq``
    in SB3's vector steps so that it keeps one update per 4 agent steps (:mod:`sb3_breakout.parallel`).
    A profile's entry is timed as shipped but for the replay size (``--buffer-size``) and learning from
    the start (``learning_starts`` 32: every timed step is in the learning phase).

    :return: agent steps/s and a note (the ``bf16: auto`` choice, the games' schedule).
    """
    import argparse as ap
    import tempfile

    from rl_zoo3.utils import get_class_by_name

    from sb3_breakout.callbacks import LinearEpsilonCallback
    from sb3_breakout.config import default_config
    from sb3_breakout.parallel import vector_step_schedule
    from sb3_breakout.train import BreakoutExperimentManager

    overrides = dict(overrides)
    profile = overrides.pop("profile", None)
    # callbacks that change the learner (the entry's own are left out: the timer sets epsilon), as class paths
    extra = [get_class_by_name(path)(verbose=0) for path in overrides.pop("extra_callbacks", [])]
    if profile is not None:
        overrides["learning_starts"] = BATCH
    elif int(overrides.get("n_envs", 1)) > 1:  # the recipe's one update per 4 agent steps, in SB3's units
        train_freq, gradient_steps = vector_step_schedule(4, 1, int(overrides["n_envs"]))
        overrides.update(train_freq=train_freq, gradient_steps=gradient_steps)
    with tempfile.TemporaryDirectory() as log:
        exp = BreakoutExperimentManager(ap.Namespace(), algo, "BreakoutNoFrameskip-v4", log, seed=0, verbose=0,
                                        n_timesteps=warmup + steps, eval_freq=-1,
                                        hyperparams={"buffer_size": BUFFER, **overrides}, profile=profile,
                                        device=DEVICE, config=str(default_config(algo)))
        model, _ = exp.setup_experiment()
        touch_buffer(model.replay_buffer)
        timer = StepTimer(warmup)
        eps = LinearEpsilonCallback(random_steps=0, decay_steps=1, initial_eps=EPS, final_eps=EPS)
        model.learn(warmup + steps, callback=[*extra, eps, timer])
        rate = timer.rate()
        extractor = getattr(model.policy, "q_net", None) or model.policy.quantile_net
        choice = getattr(extractor.features_extractor, "precision", None)
        note = "" if choice is None else (f"auto chose {'bf16' if choice.bf16 else 'fp32'} "
                                          f"({choice.fp32_s * 1e3:.0f} vs {choice.bf16_s * 1e3:.0f} ms)")
        if model.n_envs > 1:
            note = (f"{model.n_envs} games: train_freq {model.train_freq.frequency}, "
                    f"gradient_steps {model.gradient_steps}" + (f"; {note}" if note else ""))
        model.env.close()
        return rate, note


# ---------------------------------------------------------------- (d), (e): the hardware
def _flops_and_median_time(update, repeats: int) -> tuple[float, float]:
    """FLOPs of one call of ``update`` (``torch.utils.flop_counter``) and the median of its times in seconds
    over ``repeats`` calls, the first 5 left out (warm-up)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        update()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        update()
        times.append(time.perf_counter() - t)
    return float(counter.get_total_flops()), float(np.median(times[5:]))


def update_flops_and_time(policy_kwargs: dict, repeats: int = 60, algo: str = "dqn",
                          fused_loss: bool = False) -> tuple[float, float]:
    """FLOPs of one SB3 DQN (or QR-DQN) update (counted) and its median time (s). QR-DQN's loss is
    sb3-contrib's, or with ``fused_loss`` this package's (:mod:`sb3_breakout.quantile_loss`)."""
    import gymnasium as gym
    import torch.nn.functional as F
    from stable_baselines3.dqn.policies import DQNPolicy

    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    if algo == "qrdqn":
        return _qrdqn_update_time(space, policy_kwargs, repeats, fused_loss)
    policy = DQNPolicy(space, gym.spaces.Discrete(4), lambda _: 2.5e-4, **policy_kwargs)
    obs = th.randint(0, 256, (BATCH, 4, 84, 84), dtype=th.uint8).float() / 255
    nxt = th.randint(0, 256, (BATCH, 4, 84, 84), dtype=th.uint8).float() / 255
    act, rew, done = th.randint(0, 4, (BATCH, 1)), th.rand(BATCH, 1), th.zeros(BATCH, 1)

    def update() -> None:  # what DQN.train does for one gradient step
        with th.no_grad():
            target = rew + 0.99 * (1 - done) * policy.q_net_target(nxt).max(dim=1, keepdim=True)[0]
        current = th.gather(policy.q_net(obs), dim=1, index=act)
        loss = F.smooth_l1_loss(current, target)
        policy.optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        policy.optimizer.step()

    return _flops_and_median_time(update, repeats)


def _qrdqn_update_time(space, policy_kwargs: dict, repeats: int, fused_loss: bool) -> tuple[float, float]:
    """What ``QRDQN.train`` does for one gradient step (quantile Huber loss), timed."""
    import gymnasium as gym
    from sb3_contrib.common.utils import quantile_huber_loss as contrib_loss
    from sb3_contrib.qrdqn.policies import QRDQNPolicy

    from sb3_breakout.quantile_loss import quantile_huber_loss as fused

    policy = QRDQNPolicy(space, gym.spaces.Discrete(4), lambda _: 2.5e-4, **policy_kwargs)
    n = policy.n_quantiles
    obs = th.randint(0, 256, (BATCH, 4, 84, 84), dtype=th.uint8).float() / 255
    nxt = th.randint(0, 256, (BATCH, 4, 84, 84), dtype=th.uint8).float() / 255
    act, rew, done = th.randint(0, 4, (BATCH, 1)), th.rand(BATCH, 1), th.zeros(BATCH, 1)

    def update() -> None:
        with th.no_grad():
            next_q = policy.quantile_net_target(nxt)
            greedy = next_q.mean(dim=1, keepdim=True).argmax(dim=2, keepdim=True).expand(BATCH, n, 1)
            target = rew + 0.99 * (1 - done) * next_q.gather(dim=2, index=greedy).squeeze(dim=2)
        current = th.gather(policy.quantile_net(obs), dim=2, index=act[..., None].expand(BATCH, n, 1)).squeeze(dim=2)
        loss = fused(current, target) if fused_loss else contrib_loss(current, target, sum_over_quantiles=True)
        policy.optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        policy.optimizer.step()

    return _flops_and_median_time(update, repeats)


def env_only_rate(backend: str, n_envs: int, agent_steps: int) -> float:
    """Agent steps/s of random play on ``make_breakout_env`` (deepmind profile), no learner."""
    from sb3_breakout.envs import make_breakout_env

    env = make_breakout_env("deepmind", n_envs=n_envs, seed=0, backend=backend)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(20):
        env.step(rng.integers(0, 4, size=n_envs))
    vector_steps = max(1, agent_steps // n_envs)
    t = time.perf_counter()
    for _ in range(vector_steps):
        env.step(rng.integers(0, 4, size=n_envs))
    rate = vector_steps * n_envs / (time.perf_counter() - t)
    env.close()
    return rate


def matmul_peak(dtype: th.dtype, n: int = 4096, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matrix product in ``dtype`` (best of ``repeats``)."""
    a, b = th.randn(n, n, dtype=dtype), th.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---------------------------------------------------------------- driver
NATURE = "importlib.import_module('sb3_breakout.torch_layers').NatureCNN"


def fast_qr_policy_kwargs() -> str:
    """The QR-DQN fast-nature entry's ``policy_kwargs`` as ``hyperparams/qrdqn.yml`` writes them (200 quantiles):
    the base of the lever rows, which were measured with the Nature network."""
    from sb3_breakout import config as cfg

    entry = cfg.load_entry(cfg.default_config("qrdqn"), "BreakoutNoFrameskip-v4", "fast-nature")
    policy_kwargs = entry["policy_kwargs"]
    assert "n_quantiles=200" in policy_kwargs, policy_kwargs
    return policy_kwargs


def fast_nature_lever(what: str, **changes) -> tuple[str, dict]:
    """A lever row: the QR-DQN fast-nature entry, where the levers were measured, with ``changes`` (YAML keys)."""
    return f"  qrdqn.yml fast-nature entry, {what}", {"profile": "fast-nature", **changes}


# the fast entries as they were before they took the speed settings: one game (train_freq 4), fp32
ONE_GAME_FP32 = {"n_envs": 1, "train_freq": 4, "gradient_steps": 1, "policy_kwargs": (
    f"dict(features_extractor_class={NATURE}, net_arch=[], features_extractor_kwargs=dict(bf16=False), "
    "optimizer_kwargs=dict(fused=True))")}
# (QR-DQN: without optimizer_kwargs, sb3-contrib's own Adam(eps=0.01 / 32), not fused, as those runs had)
ONE_GAME_FP32_QR = {**ONE_GAME_FP32, "policy_kwargs": (
    f"dict(features_extractor_class={NATURE}, net_arch=[], n_quantiles=200, "
    "features_extractor_kwargs=dict(bf16=False))")}
CONFIGS = {
    "a": ("notebook loop (lists, per-step tensors)", None),
    "b": ("plain SB3 DQN, RL Zoo Atari settings", None),
    "c": ("sb3_breakout default", {}),
    "c-no-fused": ("  default without fused Adam", {
        "policy_kwargs": f"dict(features_extractor_class={NATURE}, net_arch=[])"}),
    "c-no-cl": ("  default without channels_last", {
        "policy_kwargs": f"dict(features_extractor_class={NATURE}, net_arch=[], "
                         "features_extractor_kwargs=dict(channels_last=False), optimizer_kwargs=dict(fused=True))"}),
    "c-bf16": ("  default + bf16 autocast", {
        "policy_kwargs": f"dict(features_extractor_class={NATURE}, net_arch=[], "
                         "features_extractor_kwargs=dict(bf16=True), optimizer_kwargs=dict(fused=True))"}),
    "c-bf16-auto": ("  default + bf16: auto (measured)", {
        "policy_kwargs": f"dict(features_extractor_class={NATURE}, net_arch=[], "
                         "features_extractor_kwargs=dict(bf16='auto'), optimizer_kwargs=dict(fused=True))"}),
    **{f"c-n{n}": (f"  default, {n} games (1 update / 4 transitions)", {"n_envs": n}) for n in (2, 4, 8)},
    **{f"c-n{n}-bf16-auto": (f"  default, {n} games + bf16: auto", {"n_envs": n, "policy_kwargs": (
        f"dict(features_extractor_class={NATURE}, net_arch=[], "
        "features_extractor_kwargs=dict(bf16='auto'), optimizer_kwargs=dict(fused=True))")}) for n in (4, 8)},
    **{f"c-ale-n{n}": (f"  default, {n} game{'s' if n > 1 else ''}, ale backend", {"n_envs": n, "vec_env_wrapper": [
        {"sb3_breakout.vector_env.ale_vector_backend": {"num_threads": 0}}]}) for n in (1, 4, 8)},
    "c-gpu-frames": ("  default, replay frames in GPU memory", {"replay_buffer_class": (
        "importlib.import_module('sb3_breakout.device_buffer').DeviceFrameStackReplayBuffer")}),
    "c-fast": ("  dqn.yml fast entry as shipped", {"profile": "fast"}),
    "c-fast-before": ("  dqn.yml fast entry, 1 game, fp32 (before)", {"profile": "fast", **ONE_GAME_FP32}),
    "b-qr": ("plain sb3-contrib QR-DQN, RL Zoo Atari", None),
    "c-qr": ("sb3_breakout QR-DQN (hyperparams/qrdqn.yml)", {}),
    "c-qr-fast": ("  qrdqn.yml fast entry as shipped", {"profile": "fast"}),
    "c-qr-fast-before": fast_nature_lever("1 game, fp32 (before)", **ONE_GAME_FP32_QR),
    # policy_kwargs without optimizer_kwargs: sb3-contrib's QRDQN builds Adam(eps=0.01 / 32), not fused, as
    # it did for every run of the entry until qrdqn.yml named optimizer_class (sb3_breakout.config)
    "c-qr-fast-unfused": fast_nature_lever(
        "sb3-contrib's own Adam (not fused: runs before 2026-12-02)", policy_kwargs=(
            f"dict(features_extractor_class={NATURE}, net_arch=[], n_quantiles=200, "
            "features_extractor_kwargs=dict(channels_last=True, bf16='auto'))")),
    "c-qr-fast-ale": fast_nature_lever("on ALE's vector env", vec_env_wrapper=[
        {"sb3_breakout.vector_env.ale_vector_backend": {"num_threads": 0}}]),
    # the replay ratio: updates per agent step (train_freq in vector steps of the entry's 4 games)
    "c-qr-fast-rr4": fast_nature_lever("1 update / 4 agent steps (train_freq 1: before 2026-12-02)", train_freq=1),
    "c-qr-fast-rr16": fast_nature_lever("1 update / 16 agent steps (train_freq 4)", train_freq=4),
    "c-qr-fast-b64": fast_nature_lever("1 update of batch 64 / 8 agent steps", batch_size=64),
    "c-qr-fast-q50": fast_nature_lever("50 quantiles (not 200)", policy_kwargs=fast_qr_policy_kwargs().replace(
        "n_quantiles=200", "n_quantiles=50")),
    # prioritized replay (sb3_breakout.prioritized): the sum tree's draws and updates, the weighted loss
    "c-qr-fast-per": fast_nature_lever(
        "prioritized replay (alpha 0.5, beta 0.4 -> 1)",
        replay_buffer_class="importlib.import_module('sb3_breakout.prioritized').PrioritizedFrameStackReplayBuffer",
        replay_buffer_kwargs="dict(n_steps=3, gamma=0.99, alpha=0.5, beta=0.4)"),
    # 8 games at train_freq 1: the same one update per 8 agent steps, twice the games per forward pass
    "c-qr-fast-n8": fast_nature_lever("8 games at train_freq 1 (1 update / 8 agent steps)", n_envs=8, train_freq=1),
    # DrQ's random shift of the sampled frames (NatureCNN random_shift, training mode only)
    "c-qr-fast-drq": fast_nature_lever("DrQ random shift of +-4 pixels", policy_kwargs=fast_qr_policy_kwargs().replace(
        "bf16='auto')", "bf16='auto', random_shift=4)")),
    # Double DQN's target (sb3_breakout.double_q): one more forward pass of the online network per update
    "c-qr-fast-dq": fast_nature_lever("double-Q target (DoubleQCallback)",
                                      extra_callbacks=["sb3_breakout.double_q.DoubleQCallback"]),
    # the fast entry with the Nature network (the fast entry until 2026-12-03 evening; the rows above change it)
    "c-qr-fast-nature": ("  qrdqn.yml fast-nature entry as shipped (the fast entry with NatureCNN)", {
        "profile": "fast-nature"}),
}
QRDQN_ROWS = ("b-qr", "c-qr", "c-qr-fast", "c-qr-fast-before", "c-qr-fast-unfused", "c-qr-fast-ale",
              "c-qr-fast-rr4", "c-qr-fast-rr16", "c-qr-fast-b64", "c-qr-fast-q50", "c-qr-fast-per",
              "c-qr-fast-n8", "c-qr-fast-drq", "c-qr-fast-dq", "c-qr-fast-nature")
CPU_ONLY_ROWS = ("a",)  # the notebook loop runs on the CPU
CUDA_ONLY_ROWS = ("c-gpu-frames",)  # frames in GPU memory: nothing to time on the CPU


def child(name: str, warmup: int, steps: int, threads: int, device: str) -> None:
    global DEVICE
    DEVICE = device
    th.set_num_threads(threads)
    note = ""
    if name == "a":
        rate = run_notebook(warmup, steps)
    elif name in ("b", "b-qr"):
        rate = run_sb3_zoo(warmup, steps, "qrdqn" if name == "b-qr" else "dqn")
    else:
        rate, note = run_ours(warmup, steps, CONFIGS[name][1], "qrdqn" if name in QRDQN_ROWS else "dqn")
    print(json.dumps({"steps_per_s": rate, "peak_rss_mb": peak_rss_mb(), "note": note}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="timed agent steps per configuration")
    parser.add_argument("--warmup", type=int, default=500, help="learning-phase steps before timing")
    parser.add_argument("--threads", type=int, default=th.get_num_threads(), help="torch threads")
    parser.add_argument("--algo", choices=["dqn", "qrdqn", "both"], default="both",
                        help="learner rows to time: DQN's, QR-DQN's (b-qr, c-qr: hyperparams/qrdqn.yml), or both")
    parser.add_argument("--buffer-size", type=int, default=100_000,
                        help="replay buffer of every learner (default 100000; plain SB3 (b) then takes ~5.8 GB)")
    parser.add_argument("--env-steps", type=int, default=3000,
                        help="agent steps per row of the env-only table (f); 0 skips it")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS),
                        help="configurations to time (default: all; on cuda all but a)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where (b) and (c) train (default: cpu); (a) and the hardware figures stay on the CPU")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not th.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here; allowed: cpu")
    if args.only is None:
        args.only = [name for name in CONFIGS
                     if name not in (CUDA_ONLY_ROWS if args.device == "cpu" else CPU_ONLY_ROWS)]
    if args.device == "cuda" and "a" in args.only:
        parser.error("--only a: the notebook loop runs on the CPU only; drop it with --device cuda")
    if args.device == "cpu" and set(args.only) & set(CUDA_ONLY_ROWS):
        parser.error("--only c-gpu-frames: the replay frames in GPU memory need --device cuda")
    set_buffer(args.buffer_size)
    if args.buffer_size < BATCH:
        parser.error(f"--buffer-size={args.buffer_size}: allowed: an integer >= {BATCH}")
    if args.child:
        child(args.child, args.warmup, args.steps, args.threads, args.device)
        return
    if args.algo != "both":
        args.only = [n for n in args.only if (n in QRDQN_ROWS) == (args.algo == "qrdqn")]

    where = th.cuda.get_device_name() if args.device == "cuda" else cpu_model()
    print(f"torch {th.__version__}, {where}, {args.threads} threads, {args.steps} timed steps after {args.warmup}, "
          f"eps {EPS}, replay buffers of {BUFFER} transitions; load average {os.getloadavg()[0]:.1f} at the start")
    results = {}
    for name in args.only:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps),
                              "--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device,
                              "--buffer-size", str(BUFFER)],
                             capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[name]
        base = "b-qr" if name in QRDQN_ROWS else "b"
        ratio = f"x{r['steps_per_s'] / results[base]['steps_per_s']:.2f} of {base}" if base in results else ""
        print(f"({name:<11}) {CONFIGS[name][0]:<45} {r['steps_per_s']:7.1f} steps/s  {ratio:<12} "
              f"peak RSS {r['peak_rss_mb']:6.0f} MB  {r.get('note', '')}", flush=True)
    if "c" in results:
        for base in ("a", "b"):
            if base in results:
                print(f"ratio c/{base}: {results['c']['steps_per_s'] / results[base]['steps_per_s']:.2f}")
    if "c-qr" in results and "c" in results:
        print(f"QR-DQN against DQN (ours): {results['c-qr']['steps_per_s'] / results['c']['steps_per_s']:.2f}")

    if args.device != "cpu":
        return
    th.set_num_threads(args.threads)
    fastest = dict(features_extractor_class=__import__("sb3_breakout.torch_layers", fromlist=["x"]).NatureCNN,
                   net_arch=[], optimizer_kwargs=dict(fused=True))
    flops, seconds = update_flops_and_time(fastest)
    achieved = flops / seconds
    print(f"(d) one update, default (fp32, channels_last, fused Adam): {seconds * 1e3:.1f} ms, "
          f"{flops / 1e9:.2f} GFLOP -> {achieved / 1e9:.0f} GFLOP/s")
    if args.algo != "dqn":
        qr_kwargs = {**fastest, "n_quantiles": 200, "optimizer_kwargs": dict(eps=1e-8, fused=True)}
        for fused_loss, loss_name in ((False, "sb3-contrib's loss"), (True, "sb3_breakout's loss")):
            qr_flops, qr_seconds = update_flops_and_time(qr_kwargs, algo="qrdqn", fused_loss=fused_loss)
            print(f"(d) one QR-DQN update (200 quantiles, qrdqn.yml's network, {loss_name}): "
                  f"{qr_seconds * 1e3:.1f} ms, {qr_flops / 1e9:.2f} GFLOP; x{qr_seconds / seconds:.2f} "
                  f"the DQN update's time")
    peak32, peak16 = matmul_peak(th.float32), matmul_peak(th.bfloat16)
    print(f"(e) peak: fp32 matmul {peak32 / 1e9:.0f} GFLOP/s, bf16 matmul {peak16 / 1e9:.0f} GFLOP/s")
    print(f"update at {100 * achieved / peak32:.0f}% of the fp32 peak")
    if args.env_steps > 0:
        print(f"(f) env only, random play, deepmind profile, {args.env_steps} agent steps per row (agent steps/s):")
        print("    games   python (DummyVecEnv)   ale (AtariVectorEnv)   ale/python")
        for n in (1, 2, 4, 8, 16):
            py, ale = env_only_rate("python", n, args.env_steps), env_only_rate("ale", n, args.env_steps)
            print(f"    {n:5d}   {py:20.0f}   {ale:20.0f}   {ale / py:10.2f}", flush=True)


def set_buffer(size: int) -> None:
    """Replay buffer size of every learner in this process (``--buffer-size``)."""
    global BUFFER
    BUFFER = size


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
        units = [u for u in ("avx512f", "avx512_bf16", "amx_bf16") if u in flags]
        return f"{name} ({', '.join(units) or 'no AVX-512'}{'' if 'amx_bf16' in flags else ', no AMX'})"
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
