"""
Training throughput on this machine, in one run: agent steps/s in the learning phase of

  (a) the PyTorch notebook's loop (Python lists of float tensors, per-step tensor conversions),
  (b) plain SB3 DQN, ``CnnPolicy``, RL Zoo's Atari settings,
  (c) sb3_breakout's default training (``hyperparams/dqn.yml``), and each speed option alone,

then, for the hardware, (d) the time of one DQN update (batch 32) in the fastest configuration and its
FLOP/s, counted by ``torch.utils.flop_counter``, next to (e) the CPU's measured peak: large fp32 and bf16
matrix products timed in the same run.

Every configuration runs in its own subprocess (one at a time), so its peak RSS is its own. All of
them act with the same epsilon (0.1, the notebooks' final value) and train every 4 steps with batch 32,
so the network costs the same per step; each warms up for ``--warmup`` steps in the learning phase
before ``--steps`` timed steps.

    python scripts/bench_throughput.py                 # all, ~10 minutes here
    python scripts/bench_throughput.py --steps 1000    # quicker, noisier
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch as th

EPS = 0.1
BATCH = 32
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


def run_sb3_zoo(warmup: int, steps: int) -> float:
    """Plain SB3 DQN with RL Zoo's Atari hyperparameters (learning starts early so that all steps learn)."""
    from stable_baselines3 import DQN

    from sb3_breakout.envs import make_breakout_env

    env = make_breakout_env("deepmind", seed=0)
    model = DQN("CnnPolicy", env, buffer_size=100_000, learning_rate=1e-4, batch_size=BATCH, learning_starts=BATCH,
                target_update_interval=1000, train_freq=4, gradient_steps=1, exploration_initial_eps=EPS,
                exploration_final_eps=EPS, optimize_memory_usage=False, seed=0, device=DEVICE)
    touch_buffer(model.replay_buffer)
    timer = StepTimer(warmup)
    model.learn(warmup + steps, callback=timer)
    return timer.rate()


def run_ours(warmup: int, steps: int, overrides: dict) -> float:
    """sb3_breakout's default YAML entry, built by the training CLI's ExperimentManager."""
    import argparse as ap
    import tempfile

    from sb3_breakout.callbacks import LinearEpsilonCallback
    from sb3_breakout.config import default_config
    from sb3_breakout.train import BreakoutExperimentManager

    with tempfile.TemporaryDirectory() as log:
        exp = BreakoutExperimentManager(ap.Namespace(), "dqn", "BreakoutNoFrameskip-v4", log, seed=0, verbose=0,
                                        n_timesteps=warmup + steps, eval_freq=-1, hyperparams=overrides,
                                        device=DEVICE, config=str(default_config("dqn")))
        model, _ = exp.setup_experiment()
        touch_buffer(model.replay_buffer)
        timer = StepTimer(warmup)
        eps = LinearEpsilonCallback(random_steps=0, decay_steps=1, initial_eps=EPS, final_eps=EPS)
        model.learn(warmup + steps, callback=[eps, timer])
        return timer.rate()


# ---------------------------------------------------------------- (d), (e): the hardware
def update_flops_and_time(policy_kwargs: dict, repeats: int = 60) -> tuple[float, float]:
    """FLOPs of one SB3 DQN update (counted) and its median time (s)."""
    import gymnasium as gym
    import torch.nn.functional as F
    from stable_baselines3.dqn.policies import DQNPolicy
    from torch.utils.flop_counter import FlopCounterMode

    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
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

    with FlopCounterMode(display=False) as counter:
        update()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        update()
        times.append(time.perf_counter() - t)
    return float(counter.get_total_flops()), float(np.median(times[5:]))


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
}


def child(name: str, warmup: int, steps: int, threads: int, device: str) -> None:
    global DEVICE
    DEVICE = device
    th.set_num_threads(threads)
    if name == "a":
        rate = run_notebook(warmup, steps)
    elif name == "b":
        rate = run_sb3_zoo(warmup, steps)
    else:
        rate = run_ours(warmup, steps, CONFIGS[name][1])
    print(json.dumps({"steps_per_s": rate, "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="timed agent steps per configuration")
    parser.add_argument("--warmup", type=int, default=500, help="learning-phase steps before timing")
    parser.add_argument("--threads", type=int, default=th.get_num_threads(), help="torch threads")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS),
                        help="configurations to time (default: all; on cuda all but a)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where (b) and (c) train (default: cpu); (a) and the hardware figures stay on the CPU")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not th.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here; allowed: cpu")
    if args.only is None:
        args.only = [name for name in CONFIGS if args.device == "cpu" or name != "a"]
    if args.device == "cuda" and "a" in args.only:
        parser.error("--only a: the notebook loop runs on the CPU only; drop it with --device cuda")
    if args.child:
        child(args.child, args.warmup, args.steps, args.threads, args.device)
        return

    where = th.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"torch {th.__version__}, {where}, {args.threads} threads, {args.steps} timed steps after {args.warmup}, "
          f"eps {EPS}")
    results = {}
    for name in args.only:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps),
                              "--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device],
                             capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"({name:<10}) {CONFIGS[name][0]:<42} {r['steps_per_s']:7.1f} steps/s   peak RSS {r['peak_rss_mb']:7.0f} MB",
              flush=True)
    if "c" in results:
        for base in ("a", "b"):
            if base in results:
                print(f"ratio c/{base}: {results['c']['steps_per_s'] / results[base]['steps_per_s']:.2f}")

    if args.device != "cpu":
        return
    th.set_num_threads(args.threads)
    fastest = dict(features_extractor_class=__import__("sb3_breakout.torch_layers", fromlist=["x"]).NatureCNN,
                   net_arch=[], optimizer_kwargs=dict(fused=True))
    flops, seconds = update_flops_and_time(fastest)
    peak32, peak16 = matmul_peak(th.float32), matmul_peak(th.bfloat16)
    achieved = flops / seconds
    print(f"(d) one update, default (fp32, channels_last, fused Adam): {seconds * 1e3:.1f} ms, "
          f"{flops / 1e9:.2f} GFLOP -> {achieved / 1e9:.0f} GFLOP/s")
    print(f"(e) peak: fp32 matmul {peak32 / 1e9:.0f} GFLOP/s, bf16 matmul {peak16 / 1e9:.0f} GFLOP/s")
    print(f"update at {100 * achieved / peak32:.0f}% of the fp32 peak")


if __name__ == "__main__":
    main()
