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
tensor copies can wait ~15 ms for a core, which hides the buffers' own cost. With ``--device cuda`` the
samples go to the GPU (each buffer's ``device``; every call waits for the GPU before it is timed) and a
third buffer is timed: ``DeviceFrameStackReplayBuffer`` (:mod:`sb3_breakout.device_buffer`), the compact
buffer with its frames in GPU memory, which gathers the batch there.

Checkpoints (``--part checkpoint``): the compact buffer of each ``--checkpoint-sizes`` transitions,
filled half and then fully with the same replayed stream of real frames, is saved as a checkpoint
saves it (SB3's ``save_replay_buffer``) in two layouts: the baseline, the whole arrays as Python
pickled the buffer before it had pickle hooks, and the compressed written rows of
``FrameStackReplayBuffer.__getstate__``. Each file is fsync'd (as a checkpoint is), dropped from the
page cache (``posix_fadvise``) and loaded back from the disk (SB3's ``load_replay_buffer``); the
table gives bytes, seconds and the ratios baseline/compressed, and the extra memory a save takes
(peak RSS during the save minus RSS before, sampled every 5 ms). The stream repeats every
``--real-steps`` frames (14 MB at 2,000), more than a compressed block (8 MB of frames), so the
repetition does not help the compression: the ratio is that of real random-play frames. A buffer is
only built when the RAM left after it stays above ``--keep-free`` GB (the 1M rows need ~11 GB
available); else its row says "not measured: RAM".

    python scripts/bench_buffer.py              # buffer 100,000, batch 32, 2,000 repeats: ~2 minutes
    python scripts/bench_buffer.py --buffer-size 20000 --repeats 500
    python scripts/bench_buffer.py --part sample --device cuda   # + the frames in GPU memory
    python scripts/bench_buffer.py --part checkpoint --checkpoint-sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import copyreg
import gc
import os
import pickle
import tempfile
import threading
import time
from copy import deepcopy
from pathlib import Path

import numpy as np
import psutil
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl

from sb3_breakout.buffers import FrameStackReplayBuffer
from sb3_breakout.device_buffer import DeviceFrameStackReplayBuffer
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


class _OldLayoutPickler(pickle.Pickler):
    """The baseline: the buffer pickled as before it had pickle hooks (its attributes, whole arrays)."""

    def reducer_override(self, obj):
        if type(obj) is FrameStackReplayBuffer:
            return copyreg.__newobj__, (type(obj),), dict(obj.__dict__), None, None
        return NotImplemented


def _save_old_layout(path: Path, buffer: FrameStackReplayBuffer) -> None:
    with open(path, "wb") as f:
        _OldLayoutPickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(buffer)


class _PeakRSS:
    """Peak resident memory of this process while the ``with`` block runs (sampled every 5 ms)."""

    def __enter__(self) -> _PeakRSS:
        self._process, self._stop = psutil.Process(), threading.Event()
        self.before = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def _to_disk(path: Path) -> None:
    """fsync the file, then drop it from the page cache so that the load reads the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def save_both(buffer: FrameStackReplayBuffer, folder: Path) -> dict:
    """Save ``buffer`` in both layouts into ``folder``: bytes, seconds, extra RSS of each save."""
    figures = {}
    for layout, save in (("old", _save_old_layout), ("new", save_to_pkl)):
        path = folder / f"{layout}.pkl"
        with _PeakRSS() as rss:
            start = time.perf_counter()
            save(path, buffer)
            _to_disk(path)
            figures[layout] = {"save_s": time.perf_counter() - start, "bytes": path.stat().st_size,
                               "save_extra_rss": rss.peak - rss.before}
    return figures


def load_both(folder: Path, figures: dict) -> FrameStackReplayBuffer:
    """Load both files back (one copy in memory at a time; the caller has freed its buffer); returns the
    buffer loaded from the compressed file."""
    for layout in ("old", "new"):
        start = time.perf_counter()
        loaded = load_from_pkl(folder / f"{layout}.pkl")
        figures[layout]["load_s"] = time.perf_counter() - start
        (folder / f"{layout}.pkl").unlink()
        if layout == "old":
            del loaded
            gc.collect()
    return loaded


def checkpoint_rows(sizes: list[int], stream: list[tuple], obs_space, action_space, keep_free_gb: float) -> None:
    print("\ncheckpoint of the replay buffer (SB3 save_replay_buffer; fsync'd, loaded back from the disk):")
    print("| transitions | filled | baseline (whole arrays): bytes, save s, load s | compressed rows: bytes, "
          "save s, load s | bytes ratio | save ratio | load ratio | extra RSS of a save: baseline, compressed |")
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        full_bytes = FrameStackReplayBuffer.estimate_nbytes(size, obs_space, 1, action_space)
        buffer, added = None, 0
        for filled, label in ((size // 2, "half"), (size, "full")):
            held = 0 if buffer is None else buffer.nbytes
            need = full_bytes * filled / size - held  # what filling it allocates (np.zeros pages are lazy)
            available = psutil.virtual_memory().available
            if available - need < keep_free_gb * 1e9:
                print(f"| {size:,} | {label} | not measured: RAM ({available / 1e9:.1f} GB available, "
                      f"{need / 1e9:.1f} GB needed, {keep_free_gb:.0f} GB kept free) |")
                continue
            if buffer is None:
                buffer = FrameStackReplayBuffer(size, obs_space, action_space, "cpu")
            while added < filled:
                buffer.add(*stream[added % len(stream)])
                added += 1
            with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
                figures = save_both(buffer, Path(tmp))
                del buffer  # one copy in memory at a time: the loads below allocate theirs
                gc.collect()
                buffer = load_both(Path(tmp), figures)
            old, new = figures["old"], figures["new"]
            print(f"| {size:,} | {label} | {old['bytes'] / 1e6:,.1f} MB, {old['save_s']:.2f}, {old['load_s']:.2f} "
                  f"| {new['bytes'] / 1e6:,.1f} MB, {new['save_s']:.2f}, {new['load_s']:.2f} "
                  f"| {old['bytes'] / new['bytes']:.0f} | {old['save_s'] / new['save_s']:.1f} "
                  f"| {old['load_s'] / new['load_s']:.1f} "
                  f"| {old['save_extra_rss'] / 1e6:,.0f} MB, {new['save_extra_rss'] / 1e6:,.0f} MB |", flush=True)
        del buffer
        gc.collect()


def median_sample_times(buffers: dict[str, ReplayBuffer], batch_size: int, repeats: int) -> dict[str, float]:
    """Median seconds of ``sample(batch_size)`` per buffer, ``repeats`` calls each, alternating between the
    buffers; on a GPU each call waits for the device (``torch.cuda.synchronize``) before it is timed."""
    cuda = any(buffer.device.type == "cuda" for buffer in buffers.values())
    times: dict[str, list[float]] = {name: [] for name in buffers}
    for _ in range(repeats):
        for name, buffer in buffers.items():
            start = time.perf_counter()
            buffer.sample(batch_size)
            if cuda:
                th.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


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
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the samples go (default cpu); cuda also times the frames in GPU memory")
    parser.add_argument("--part", choices=("all", "sample", "checkpoint"), default="all",
                        help="sample(): the two buffers' sampling and memory; checkpoint: save/load rows")
    parser.add_argument("--checkpoint-sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="buffer sizes of the checkpoint rows (transitions, one env)")
    parser.add_argument("--keep-free", type=float, default=4.0,
                        help="GB of RAM that must stay available after a buffer is filled, else its row is skipped")
    args = parser.parse_args()
    if args.device == "cuda" and not th.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here; allowed: cpu")
    th.set_num_threads(args.threads)

    stream, n_ends = record_stream(args.real_steps, args.n_envs, args.seed)
    env = make_breakout_env("deepmind", n_envs=1)
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    print(f"stream: {len(stream)} real steps x {args.n_envs} env(s), {n_ends} episode ends "
          f"(life losses and game overs), replayed to fill {args.buffer_size:,} transitions")
    if args.part in ("all", "checkpoint"):
        single = stream if args.n_envs == 1 else record_stream(args.real_steps, 1, args.seed)[0]
        checkpoint_rows(args.checkpoint_sizes, single, obs_space, action_space, args.keep_free)
    if args.part == "checkpoint":
        return

    plain = ReplayBuffer(args.buffer_size, obs_space, action_space, args.device, n_envs=args.n_envs)
    compact = FrameStackReplayBuffer(args.buffer_size, obs_space, action_space, args.device, n_envs=args.n_envs)
    buffers: dict[str, ReplayBuffer] = {"plain": plain, "compact": compact}
    if args.device == "cuda":
        buffers["gpu frames"] = DeviceFrameStackReplayBuffer(args.buffer_size, obs_space, action_space, "cuda",
                                                             n_envs=args.n_envs)
    n_adds = plain.buffer_size + plain.buffer_size // 3  # wrap around once
    adds = {name: fill(buffer, stream, n_adds) for name, buffer in buffers.items()}
    print("add(): " + ", ".join(f"{name} {seconds * 1e6:.1f} us" for name, seconds in adds.items()) + " per step")

    # the same batch from both, for one seed and indices valid in both
    np.random.seed(args.seed)
    offsets = np.random.randint(compact.n_stack - 1, compact.buffer_size, size=args.batch_size)
    inds = (compact.pos + offsets) % compact.buffer_size
    batches = {}
    for name, buffer in buffers.items():
        np.random.seed(args.seed)
        batches[name] = buffer._get_samples(inds)
    for name, batch in batches.items():
        assert all(th.equal(x.cpu(), y.cpu()) for x, y in zip(batches["plain"][:5], batch[:5], strict=True)), \
            f"{name} and plain disagree"

    median = median_sample_times(buffers, args.batch_size, args.repeats)
    print(f"sample({args.batch_size}) median of {args.repeats} on {args.device}: "
          + ", ".join(f"{name} {seconds * 1e6:.0f} us" for name, seconds in median.items())
          + "; ratio to plain: " + ", ".join(f"{name} {seconds / median['plain']:.2f}"
                                              for name, seconds in median.items() if name != "plain"))

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
