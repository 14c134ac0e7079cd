"""
Replay memory: SB3's ``ReplayBuffer`` against ``sb3_breakout.buffers.FrameStackReplayBuffer``, in one
process: sampling time of a batch, bytes per transition, and the 1M-transition figure.

Both buffers are filled with the same stream, as SB3's DQN stores it. To save time the stream is not
all played: ``--real-steps`` steps of real random Breakout play (deepmind profile, real frames, life
losses and game overs) are recorded once and replayed in a loop until the buffers have wrapped
around. Each replay starts again from the zero-filled reset observation, as when ``learn()`` is
called again (an env reset without a done), so the frames, the episode structure and the share of
episode ends (what the compact buffer's side store holds) are those of real random play; only the
frames repeat. The plain buffer of 100,000 transitions takes 5.6 GB of memory.

Sampling: ``sample(--batch-size)`` on each buffer, ``--repeats`` times, alternating between the two,
median time per call; the returned tensors are the same in both (checked on one batch first).
Torch uses ``--threads`` threads (1 by default): on a machine shared with other work, multi-threaded
tensor copies can wait ~15 ms for a core, which hides the buffers' own cost.

    python scripts/bench_buffer.py              # buffer 100,000, batch 32, 2,000 repeats: ~2 minutes
    python scripts/bench_buffer.py --buffer-size 20000 --repeats 500
"""

from __future__ import annotations

import argparse
import time
from copy import deepcopy

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer

from sb3_breakout.buffers import FrameStackReplayBuffer
from sb3_breakout.envs import make_breakout_env

PLAIN_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def record_stream(real_steps: int, n_envs: int, seed: int) -> tuple[list[tuple], int]:
    """``real_steps`` steps of random play as DQN's ``_store_transition`` passes them to ``add``
    (terminal observation as the next observation of a done env), and the number of episode ends."""
    env = make_breakout_env("deepmind", n_envs=n_envs, seed=seed)
    rng = np.random.default_rng(seed)
    last_obs = env.reset()
    stream, n_ends = [], 0
    for _ in range(real_steps):
        actions = rng.integers(0, env.action_space.n, size=n_envs)
        new_obs, rewards, dones, infos = env.step(actions)
        next_obs = deepcopy(new_obs)
        for i, done in enumerate(dones):
            if done:
                next_obs[i] = infos[i]["terminal_observation"]
        stream.append((last_obs, next_obs, actions, rewards, dones, infos))
        n_ends += int(dones.sum())
        last_obs = new_obs
    env.close()
    return stream, n_ends


def fill(buffer: ReplayBuffer, stream: list[tuple], n_adds: int) -> float:
    """Add ``n_adds`` steps, cycling the stream; return seconds per add."""
    start = time.perf_counter()
    for i in range(n_adds):
        buffer.add(*stream[i % len(stream)])
    return (time.perf_counter() - start) / n_adds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buffer-size", type=int, default=100_000, help="transitions held by each buffer")
    parser.add_argument("--batch-size", type=int, default=32, help="transitions per sample() call")
    parser.add_argument("--repeats", type=int, default=2000, help="sample() calls timed per buffer")
    parser.add_argument("--real-steps", type=int, default=2000, help="steps of real play recorded")
    parser.add_argument("--n-envs", type=int, default=1, help="parallel envs (SB3 layout position x env)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the tensor copies in sample(); 1 avoids waits when busy")
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    stream, n_ends = record_stream(args.real_steps, args.n_envs, args.seed)
    env = make_breakout_env("deepmind", n_envs=1)
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    print(f"stream: {len(stream)} real steps x {args.n_envs} env(s), {n_ends} episode ends "
          f"(life losses and game overs), replayed to fill {args.buffer_size:,} transitions")

    plain = ReplayBuffer(args.buffer_size, obs_space, action_space, "cpu", n_envs=args.n_envs)
    compact = FrameStackReplayBuffer(args.buffer_size, obs_space, action_space, "cpu", n_envs=args.n_envs)
    n_adds = plain.buffer_size + plain.buffer_size // 3  # wrap around once
    add_plain = fill(plain, stream, n_adds)
    add_compact = fill(compact, stream, n_adds)
    print(f"add(): plain {add_plain * 1e6:.1f} us, compact {add_compact * 1e6:.1f} us per step")

    # the same batch from both, for one seed and indices valid in both
    np.random.seed(args.seed)
    offsets = np.random.randint(compact.n_stack - 1, compact.buffer_size, size=args.batch_size)
    inds = (compact.pos + offsets) % compact.buffer_size
    np.random.seed(args.seed)
    a = plain._get_samples(inds)
    np.random.seed(args.seed)
    b = compact._get_samples(inds)
    assert all(th.equal(x, y) for x, y in zip(a[:5], b[:5])), "the two buffers disagree"

    times = {"plain": [], "compact": []}
    for _ in range(args.repeats):
        for name, buffer in (("plain", plain), ("compact", compact)):
            start = time.perf_counter()
            buffer.sample(args.batch_size)
            times[name].append(time.perf_counter() - start)
    median = {name: float(np.median(t)) for name, t in times.items()}
    ratio = median["compact"] / median["plain"]
    print(f"sample({args.batch_size}) median of {args.repeats}: plain {median['plain'] * 1e6:.0f} us, "
          f"compact {median['compact'] * 1e6:.0f} us, ratio compact/plain {ratio:.2f}")

    capacity = plain.buffer_size * plain.n_envs
    plain_bytes = sum(getattr(plain, name).nbytes for name in PLAIN_ARRAYS)
    fixed = FrameStackReplayBuffer.estimate_nbytes(args.buffer_size, obs_space, args.n_envs, action_space)
    print(f"bytes per transition: plain {plain_bytes / capacity:,.0f}, "
          f"compact {compact.bytes_per_transition:,.0f} "
          f"(fixed arrays {fixed / capacity:,.0f} + side store {compact.side_nbytes / capacity:,.0f}: "
          f"{int((compact.next_slots >= 0).sum())} episode ends held)")
    side_per_transition = compact.side_nbytes / capacity
    print(f"1M transitions: plain {plain_bytes / capacity * 1e6 / 1e9:.2f} GB, compact "
          f"{FrameStackReplayBuffer.estimate_nbytes(1_000_000, obs_space) / 1e9:.2f} GB fixed "
          f"(+{side_per_transition * 1e6 / 1e9:.3f} GB side store at this stream's rate of episode ends)")


if __name__ == "__main__":
    main()
