"""
What one update and one action cost with each features extractor, in one run: the Nature network
(:class:`sb3_breakout.torch_layers.NatureCNN`, the baseline) and the IMPALA network
(:class:`sb3_breakout.torch_layers.ImpalaCNN`), in float32 and in bfloat16 autocast, at each thread count.

An update is what ``bf16: auto`` times (:func:`sb3_breakout.precision.time_updates`: batch 32, online
forward and backward, a target forward, Huber loss, fused Adam; the median of ``--repeats``, the
precisions alternated); acting is one forward pass in eval mode on a step of the fast entries' 4 games
(bf16, the precision ``auto`` picks on the project's hosts). Ratios are against the Nature network in the
same run. Training speed per agent step follows from these with the fast entry's one update per 8 agent
steps; ``scripts/bench_throughput.py --algo qrdqn --only c-qr-fast c-qr-fast-nature`` measures it whole.

    python scripts/bench_network.py                 # ~1 minute here
    python scripts/bench_network.py --threads 1 2 --repeats 41
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch as th
from bench_throughput import cpu_model  # scripts/ is on sys.path when this script runs
from gymnasium import spaces

from sb3_breakout.precision import time_updates
from sb3_breakout.torch_layers import ImpalaCNN, NatureCNN

SPACE = spaces.Box(0, 255, (4, 84, 84), np.uint8)
NETWORKS = {"NatureCNN": NatureCNN, "ImpalaCNN": ImpalaCNN}


def acting_seconds(network: type, games: int = 4, repeats: int = 50) -> float:
    """Median seconds of one bf16 forward pass in eval mode on ``games`` stacked frames."""
    net = network(SPACE, bf16=True).eval()
    frames = th.randint(0, 256, (games, *SPACE.shape), dtype=th.uint8)
    times = []
    with th.no_grad():
        for i in range(repeats + 5):
            start = time.perf_counter()
            net(frames)
            if i >= 5:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default: 1 2)")
    parser.add_argument("--repeats", type=int, default=21, help="timed updates per precision (default: 21)")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()}; torch {th.__version__}")
    print("threads | network | update fp32 ms | update bf16 ms | acting (4 games, bf16) ms | x Nature (best update)")
    for threads in args.threads:
        th.set_num_threads(threads)
        best = {}
        for name, network in NETWORKS.items():
            th.manual_seed(0)
            fp32_s, bf16_s = time_updates(network(SPACE), SPACE.shape, th.device("cpu"), repeats=args.repeats)
            best[name] = min(fp32_s, bf16_s)
            acting_ms = acting_seconds(network) * 1e3
            print(f"{threads} | {name} | {fp32_s * 1e3:.1f} | {bf16_s * 1e3:.1f} | {acting_ms:.2f} | "
                  f"{best[name] / best['NatureCNN']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
