"""The compact replay buffer with its frames in GPU memory, so that batches are gathered on the GPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecNormalize

from sb3_breakout.buffers import FrameStackReplayBuffer, _layout


def _frame_bytes(buffer_size: int, observation_space: spaces.Space, n_envs: int) -> int:
    """Bytes of the frame store of a buffer (``frames``: one uint8 frame per position and env)."""
    shape, dtype = _layout(buffer_size, observation_space, None, n_envs)["frames"]
    return int(np.prod(shape)) * dtype.itemsize


class DeviceFrameStackReplayBuffer(FrameStackReplayBuffer):
    """
    ``FrameStackReplayBuffer`` whose frames live on its ``device`` (a torch uint8 tensor), so that
    ``sample`` gathers the stacks there.

    Why: SB3's ``ReplayBuffer`` and ``FrameStackReplayBuffer`` keep the observations in host memory:
    every ``sample`` gathers the batch on the CPU (for the compact buffer: rebuilds 2 x 4 frames per
    transition) and copies it to the GPU, 32 x 2 x 4 x 84 x 84 = 903 KB per batch of 32. On a GPU
    the update is cheap and this per-step CPU work is a large part of a step. Here the frames are a
    tensor on the GPU: a batch is gathered by torch indexing on the device, and what crosses from the
    host per sample is small (the indices, ``(batch, n_stack + 1)`` int64; a (batch, n_stack - 1)
    mask of zero-filled frames; the next frames of the few sampled episode ends, as differences, and
    of the newest position). The frames still cross once, 7 KB per env, when ``add`` stores them.

    Memory: the frame store, ``buffer_size x 84 x 84`` bytes (7,056 B per transition: 7.06 GB of GPU
    memory for 1M transitions, 706 MB for 100k), is allocated on the device at construction. The rest
    stays in host memory as in the parent (actions, rewards, dones, timeouts, episode starts,
    side-store slots: 12 B per transition, 12 MB for 1M; the side store of episode ends; the pending
    and last next frames), and so do the n-step sums and the episode bookkeeping: only the frames
    move. ``estimate_nbytes`` counts host RAM only (frames included only when the device is the CPU),
    ``estimate_device_nbytes`` the frames on the device; ``nbytes`` is the total, ``host_nbytes`` and
    ``device_nbytes`` its two parts.

    Samples are identical, field by field, to ``FrameStackReplayBuffer``'s for the same stream and the
    same random state (tested on the CPU with ``device="cpu"`` and, where CUDA is, on the GPU). The
    CPU path is unchanged: ``FrameStackReplayBuffer`` keeps numpy frames and is the default. This class
    works on the CPU too (tests; a GPU run's checkpoint resumed on a CPU-only machine) but samples
    slower there than the parent: on the CPU use ``FrameStackReplayBuffer``.

    ``device`` decides where the frames live: setting it (SB3's ``load_replay_buffer`` sets it to the
    model's) moves them. Checkpoints use the parent's format (written rows, Zstandard blocks, the
    frames copied to the host one block at a time) and load back onto the pickled device, or onto the
    CPU where no CUDA is (``get_device``), so a GPU run's buffer resumes on a CPU-only machine and a
    buffer saved on the CPU moves to the GPU when the model loading it is there.

    Use it as ``DQN(..., replay_buffer_class=DeviceFrameStackReplayBuffer)``, or in RL Zoo YAML as
    ``replay_buffer_class: "importlib.import_module('sb3_breakout.device_buffer').DeviceFrameStackReplayBuffer"``.
    Parameters as ``FrameStackReplayBuffer`` (``device``: where the frames live and the samples are
    returned; default "auto", the GPU when torch sees one).

    :raises MemoryError: the device has no room for the frame store (CUDA out of memory).
    """

    # ------------------------------------------------------------------ where the frames live

    @property
    def device(self) -> th.device:
        """Device of the frame store and of the sampled tensors; setting it moves the frames there."""
        return self._device

    @device.setter
    def device(self, device: th.device | str) -> None:
        self._device = get_device(device)
        frames = self.__dict__.get("frames")
        if isinstance(frames, th.Tensor) and frames.device != self._device:
            self.frames = frames.to(self._device)

    def _new_rows(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | th.Tensor:
        """``frames`` as a zero uint8 tensor on ``device``; the other arrays as the parent's."""
        if name != "frames":
            return super()._new_rows(name, shape, dtype)
        try:
            return th.zeros(shape, dtype=th.uint8, device=self.device)
        except th.cuda.OutOfMemoryError as exc:
            raise MemoryError(
                f"DeviceFrameStackReplayBuffer: no room on {self.device} for the frames "
                f"({int(np.prod(shape)) / 1e9:.2f} GB); lower buffer_size or use FrameStackReplayBuffer "
                f"(frames in host RAM): {exc}"
            ) from None

    def _host_rows(self, array: np.ndarray | th.Tensor, start: int, stop: int) -> np.ndarray:
        """Rows of ``frames`` copied to the host (numpy); the other arrays as the parent's."""
        if isinstance(array, th.Tensor):
            return array[start:stop].cpu().numpy()
        return super()._host_rows(array, start, stop)

    def _put_rows(self, array: np.ndarray | th.Tensor, start: int, rows: np.ndarray) -> None:
        """Copy host ``rows`` into ``frames`` on the device; the other arrays as the parent's."""
        if not isinstance(array, th.Tensor):
            super()._put_rows(array, start, rows)
            return
        if not rows.flags.writeable:  # np.frombuffer of a checkpoint block: torch wants a writable array
            rows = rows.copy()
        array[start : start + len(rows)].copy_(th.from_numpy(np.ascontiguousarray(rows)))

    def __setstate__(self, state: dict[str, Any]) -> None:
        """As the parent's, onto the pickled device, or onto the CPU where that device is missing
        (``get_device``: a CUDA device without CUDA is the CPU)."""
        state = dict(state)
        state["_device"] = get_device(state.get("_device", "cpu"))
        super().__setstate__(state)

    # ------------------------------------------------------------------ memory

    @staticmethod
    def estimate_nbytes(
        buffer_size: int,
        observation_space: spaces.Space,
        n_envs: int = 1,
        action_space: spaces.Space | None = None,
        device: th.device | str = "auto",
    ) -> int:
        """
        Bytes of host RAM the buffer allocates, known before allocating it (what the RAM check of
        ``sb3_breakout.train`` compares with the RAM available): the parent's figure less the frames
        when they go to a GPU.

        :param device: where the frames will live (default "auto": the GPU when torch sees one, as
            ``--device auto`` trains). A run with ``--device cpu`` on a machine with a GPU is counted
            as if on the GPU: its 7 KB per transition of frames are then missing from the figure.
        :return: bytes; 12 per transition for (4, 84, 84) frames and Discrete actions on a GPU, 7,068 on
            the CPU.
        """
        total = FrameStackReplayBuffer.estimate_nbytes(buffer_size, observation_space, n_envs, action_space)
        return total - DeviceFrameStackReplayBuffer.estimate_device_nbytes(
            buffer_size, observation_space, n_envs, device)

    @staticmethod
    def estimate_device_nbytes(
        buffer_size: int, observation_space: spaces.Space, n_envs: int = 1, device: th.device | str = "auto"
    ) -> int:
        """
        Bytes of device (GPU) memory the frame store takes: ``buffer_size x H x W`` (7,056 per
        transition for 84x84 frames), or 0 when ``device`` resolves to the CPU.
        """
        if get_device(device).type == "cpu":
            return 0
        return _frame_bytes(buffer_size, observation_space, n_envs)

    @property
    def device_nbytes(self) -> int:
        """Bytes held on a non-CPU device: the frame store there, else 0."""
        return 0 if self.frames.device.type == "cpu" else int(self.frames.nbytes)

    @property
    def host_nbytes(self) -> int:
        """Bytes held in host RAM: ``nbytes`` less ``device_nbytes``."""
        return self.nbytes - self.device_nbytes

    # ------------------------------------------------------------------ sampling on the device

    def _stacks(self, batch_inds: np.ndarray, env_inds: np.ndarray) -> th.Tensor:
        """
        The parent's ``_stacks`` with torch on the frames' device: the same ``n_stack + 1`` frames per
        transition, a uint8 tensor (batch, n_stack + 1, H, W) there.
        """
        device = self.frames.device
        positions = (batch_inds[:, None] + self._offsets) % self.buffer_size
        # one flat gather (index_select: on the CPU ~20x faster than 2-D advanced indexing) from the frames
        # seen as (positions x envs, H, W)
        rows = th.as_tensor((positions * self.n_envs + env_inds[:, None]).ravel(), device=device)
        frames = self.frames.view(-1, self.frame_height, self.frame_width).index_select(0, rows)
        frames = frames.view(len(batch_inds), self.n_stack + 1, self.frame_height, self.frame_width)
        if self.n_stack > 1:
            hidden = self._hidden(positions, env_inds[:, None])
            if hidden.any():
                # times 0 or 1 (on the CPU ~20x faster than masked_fill_ of this strided view)
                keep = th.as_tensor((~hidden).astype(np.uint8), device=device)[:, :, None, None]
                frames[:, : self.n_stack - 1].mul_(keep)
        newest = np.flatnonzero(batch_inds == (self.pos - 1) % self.buffer_size)
        if len(newest):
            frames[th.as_tensor(newest, device=device), -1] = th.as_tensor(
                self.pending_frames[env_inds[newest]], device=device)
        slots = self.next_slots[batch_inds, env_inds]
        ends = np.flatnonzero(slots >= 0)
        if len(ends):  # the few episode ends: their next frames = newest frame + the side store's difference
            deltas = th.as_tensor(np.stack([self._side_delta(slot) for slot in slots[ends]]), device=device)
            rows = th.as_tensor(ends, device=device)
            frames[rows, -1] = frames[rows, -2] + deltas  # uint8: mod 256, as the parent's numpy sum
        return frames

    @staticmethod
    def _normalize_obs(obs: np.ndarray | th.Tensor | dict, env: VecNormalize | None = None) -> Any:
        """As ``ReplayBuffer._normalize_obs``; a tensor goes through the host only when ``env`` is given."""
        if env is not None and isinstance(obs, th.Tensor):
            obs = obs.cpu().numpy()
        return FrameStackReplayBuffer._normalize_obs(obs, env)

    def to_torch(self, array: np.ndarray | th.Tensor, copy: bool = True) -> th.Tensor:
        """
        As ``BaseBuffer.to_torch`` for numpy arrays. A tensor (the gathered stacks) is moved to ``device``
        if not there, and copied into its own contiguous storage when ``copy`` (the observation and the
        next observation are overlapping slices of one gathered tensor).
        """
        if not isinstance(array, th.Tensor):
            return super().to_torch(array, copy)
        tensor = array.to(self.device)
        return tensor.clone(memory_format=th.contiguous_format) if copy else tensor
