"""
``bf16: auto`` for :class:`sb3_breakout.torch_layers.NatureCNN`: time the DQN update in float32 and
under bfloat16 autocast on the device the network runs on, and keep bfloat16 only where it is clearly
faster.

Why measure: bfloat16 autocast pays off only where the hardware has fast bf16 matrix units (Intel AMX,
recent GPUs). On the project's AVX-512 BF16 CPU without AMX it made the update slower (README,
"Throughput"); on an H100 it was about as fast. No fixed setting is right on every machine, and
neither SB3 nor PyTorch choose one, so (as ``--num-threads auto`` in :mod:`sb3_breakout.threads`) this
module measures where the run is.

What is timed: one update of batch 32 on a copy of the features extractor with a linear head (online
forward and backward, a target forward without gradients, Huber loss, Adam step), alternating the two
precisions so that a machine that gets busier or quieter during the measurement slows both alike;
the median of each is compared. The copy is thrown away: the network's weights are untouched.
The choice is made once per process and configuration (device, frame shape, width, memory format),
at the torch thread count of that moment, so a Q-network and its target network always run in the same
precision and a run keeps one precision while ``--num-threads auto`` tries other thread counts. It is
written into the saved zips (:func:`record_choice`): a resumed run, ``evaluate``, ``record`` and
``rl_zoo3 enjoy`` build the network in it without measuring again, on whatever device they run (a
bf16 choice made on a GPU stays bf16 on a CPU, where it may be slower: pin ``bf16=False`` there).
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch as th
import torch.nn.functional as F
from torch import nn

#: bfloat16 is kept only if its update takes less than ``1 / MARGIN`` of the float32 time (>10% faster).
MARGIN = 1.10


@dataclass(frozen=True)
class PrecisionChoice:
    """The outcome of one measurement: ``bf16`` chosen or not, median seconds per update of each."""

    bf16: bool
    fp32_s: float
    bf16_s: float
    device: str
    threads: int  #: torch CPU threads during the measurement
    network: str  #: the features extractor's class (NatureCNN, ImpalaCNN)

    def describe(self) -> str:
        """One line for the training log."""
        return (f"{self.network} bf16=auto on {self.device} ({self.threads} torch threads): one update (batch 32) "
                f"fp32 {self.fp32_s * 1e3:.1f} ms, "
                f"bf16 {self.bf16_s * 1e3:.1f} ms -> {'bf16' if self.bf16 else 'fp32'} "
                f"(bf16 kept only if > {100 * (MARGIN - 1):.0f}% faster)")


_CHOICES: dict[tuple, PrecisionChoice] = {}


def prefer_bf16(fp32_s: float, bf16_s: float, margin: float = MARGIN) -> bool:
    """Whether bfloat16 is clearly faster: ``bf16_s * margin < fp32_s``."""
    return bf16_s * margin < fp32_s


def _sync(device: th.device) -> None:
    if device.type == "cuda":
        th.cuda.synchronize(device)


def time_updates(extractor: nn.Module, obs_shape: tuple[int, ...], device: th.device, batch: int = 32,
                 warmup: int = 3, repeats: int = 11) -> tuple[float, float]:
    """
    Median seconds of one update in float32 and in bfloat16 autocast, timed alternately.

    :param extractor: a NatureCNN (copied; the original is not changed). Its ``bf16`` attribute is set
        on the copy for each precision.
    :param obs_shape: one observation's shape, as the extractor takes it.
    :param device: where to time.
    :param batch: transitions per update (32, the recipe's).
    :param warmup: untimed updates of each precision first (oneDNN/cuDNN pick their kernels).
    :param repeats: timed updates of each precision.
    :return: ``(fp32 seconds, bf16 seconds)``.
    """
    online = copy.deepcopy(extractor).to(device)
    target = copy.deepcopy(extractor).to(device)
    online.bf16_auto = target.bf16_auto = False  # the copies run as told, they do not measure again
    head = nn.Linear(online.features_dim, 4).to(device)
    params = [*online.parameters(), *head.parameters()]
    optimizer = th.optim.Adam(params, lr=1e-6, fused=True)  # the entries' Adam: its time is the same in both
    gen = th.Generator().manual_seed(0)
    obs = th.randint(0, 256, (batch, *obs_shape), dtype=th.uint8, generator=gen).to(device)
    nxt = th.randint(0, 256, (batch, *obs_shape), dtype=th.uint8, generator=gen).to(device)
    actions = th.randint(0, 4, (batch, 1), generator=gen).to(device)

    def update(bf16: bool) -> float:
        online.bf16 = target.bf16 = bf16
        _sync(device)
        start = time.perf_counter()
        with th.no_grad():
            future = head(target(nxt)).max(dim=1, keepdim=True)[0]
        current = th.gather(head(online(obs)), 1, actions)
        loss = F.smooth_l1_loss(current, 0.99 * future)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {False: [], True: []}
    with th.inference_mode(False), th.enable_grad():
        for i in range(warmup + repeats):
            for bf16 in (False, True) if i % 2 == 0 else (True, False):
                elapsed = update(bf16)
                if i >= warmup:
                    times[bf16].append(elapsed)
    return statistics.median(times[False]), statistics.median(times[True])


def choose_bf16(extractor: nn.Module, obs_shape: tuple[int, ...], device: th.device,
                verbose: bool = True) -> PrecisionChoice:
    """
    Measure (once per process and configuration) and return whether ``extractor`` should run in bf16.

    :param extractor: the NatureCNN whose ``bf16`` is ``"auto"``.
    :param obs_shape: one observation's shape.
    :param device: the device of the observations it is given.
    :param verbose: print the choice and both timings (one line).
    """
    threads = th.get_num_threads()
    network = type(extractor).__name__
    key = (network, str(device), tuple(obs_shape), extractor.features_dim, getattr(extractor, "channels_last", None))
    if key not in _CHOICES:
        fp32_s, bf16_s = time_updates(extractor, obs_shape, device)
        _CHOICES[key] = choice = PrecisionChoice(prefer_bf16(fp32_s, bf16_s), fp32_s, bf16_s, str(device), threads,
                                                 network)
        if verbose:
            print(choice.describe(), flush=True)
    return _CHOICES[key]


def record_choice(model) -> bool | None:
    """
    Write the choice of a ``bf16="auto"`` network into ``model.policy_kwargs`` (True or False in place of
    ``"auto"``), so that every zip saved afterwards (checkpoints, the final model) loads in the precision
    the run trained in: ``--resume``, ``evaluate``, ``record`` and ``rl_zoo3 enjoy`` build the network from
    the zip's ``policy_kwargs`` and do not measure again. One run keeps one precision.

    Call it before saving (and as soon as the network has measured, so that a zip saved by other code,
    RL Zoo's ``best_model.zip``, says it too); it does nothing until the network has measured (its first
    forward pass), or when the precision was given as True or False.

    :param model: an SB3 / sb3-contrib learner whose policy holds :class:`sb3_breakout.torch_layers.NatureCNN`.
    :return: the choice written (True: bf16), or None when there was nothing to write.
    """
    chosen = [module.precision.bf16 for module in model.policy.modules()
              if getattr(module, "bf16_auto", False) and getattr(module, "precision", None) is not None]
    # (the extractors measure once, so every save of a run writes the same choice)
    kwargs = dict(getattr(model, "policy_kwargs", None) or {})
    extractor_kwargs = dict(kwargs.get("features_extractor_kwargs") or {})
    if not chosen or extractor_kwargs.get("bf16") != "auto":
        return None
    extractor_kwargs["bf16"] = bool(chosen[0])
    model.policy_kwargs = {**kwargs, "features_extractor_kwargs": extractor_kwargs}
    return extractor_kwargs["bf16"]
