"""The Nature DQN network body as an SB3 features extractor."""

from __future__ import annotations

import gymnasium as gym
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space_channels_first
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

# (out_channels, kernel, stride) of the three convolutions of Mnih et al. (2015), "Human-level control
# through deep reinforcement learning", Nature 518, and of both seed notebooks.
NATURE_CONVS: tuple[tuple[int, int, int], ...] = ((32, 8, 4), (64, 4, 2), (64, 3, 1))


def _conv_out(size: int) -> int:
    """Spatial size after the three valid (unpadded) convolutions; <= 0 when the input is too small."""
    for _, kernel, stride in NATURE_CONVS:
        size = (size - kernel) // stride + 1
        if size <= 0:
            return 0
    return size


class NatureCNN(BaseFeaturesExtractor):
    """
    CNN of the DQN Nature paper: Conv 32x8x8/4, Conv 64x4x4/2, Conv 64x3x3/1 (ReLU after each),
    flatten, Linear to ``features_dim`` with ReLU.

    With SB3's ``QNetwork`` head (``net_arch=[]``) the Q-network for Breakout's 4 actions on
    (4, 84, 84) frames has 1,686,180 parameters, as in the notebooks.

    Inputs: stacked frames, channel-first ``(C, H, W)`` or channel-last ``(H, W, C)`` as the
    observation space says.

    - A ``uint8`` tensor (raw frames, 0..255) is scaled to [0, 1] here.
    - A floating tensor is taken as already scaled: this is what SB3's policies pass after their own
      ``preprocess_obs`` (``normalize_images=True``, SB3's default, divides by 255). So the frames are
      scaled exactly once either way. Do not combine this extractor with ``normalize_images=False``
      on raw pixels: the network would then see 0..255.

    Speed options (same network, same parameters; measured in ``scripts/bench_throughput.py``):

    - ``channels_last`` (default True): weights and activations in NHWC memory format, which
      oneDNN's CPU convolutions run faster than NCHW (the update took ~0.7x the time here).
    - ``bf16`` (default False): run the convolutions and the dense layer under bfloat16 autocast;
      the output is cast back to float32, so the Q head, the loss and Adam stay in float32. It pays
      off only where the CPU has fast bf16 matrix units (AMX); on AVX-512-only CPUs it is slower.
      ``"auto"``: on the first forward pass (the start of training), time the update in both
      precisions on that device and keep bf16 only if it is more than 10% faster
      (:mod:`sb3_breakout.precision`; one line with both timings is printed; :attr:`precision`
      holds them). The choice is made once per process and configuration, at the torch thread count
      of that moment, and shared by every extractor of the same configuration, so a Q-network and
      its target run alike and the run keeps one precision; the trainer writes it into the saved
      zips' ``policy_kwargs`` (:func:`sb3_breakout.precision.record_choice`).

    Regularisation option:

    - ``random_shift`` (pixels, default 0: off): DrQ's augmentation (Kostrikov et al. 2021, "Image
      Augmentation Is All You Need"; the "±4 pixels" of their Atari runs): while the module is in
      training mode, each frame stack of the batch is padded by ``random_shift`` pixels (edges
      repeated) and cropped back at a random offset, the same offset for its stacked frames. SB3 puts
      the online Q-network in training mode only inside ``train()``: acting, evaluating and the target
      network (always in eval mode) see unshifted frames. Written here, not as a wrapper, because it
      must act on the sampled batch, not on the stored frames, and a policy keyword is read by both
      trainers (RL Zoo passes ``policy_kwargs`` through) where a learner option would not be.

    :param observation_space: a 3-D ``Box`` of frames; height and width of at least 36 pixels.
    :param features_dim: width of the last (fully connected) layer, 512 in the paper.
    :param channels_last: use the NHWC memory format.
    :param bf16: use bfloat16 autocast (True), not (False), or measure (``"auto"``).
    :param random_shift: largest shift of DrQ's augmentation in training mode, in pixels (0: none).
    :raises ValueError: the space is not a 3-D Box, its frames are too small for the convolutions,
        ``bf16`` is not True, False or ``"auto"``, or ``random_shift`` is not an integer in [0, 16].
    """

    def __init__(
        self, observation_space: gym.Space, features_dim: int = 512, channels_last: bool = True,
        bf16: bool | str = False, random_shift: int = 0,
    ) -> None:
        if bf16 not in (True, False, "auto"):
            raise ValueError(f"{type(self).__name__} bf16={bf16!r} is not allowed: True, False or 'auto'")
        if isinstance(random_shift, bool) or not isinstance(random_shift, int) or not 0 <= random_shift <= 16:
            raise ValueError(f"{type(self).__name__} random_shift={random_shift!r} is not allowed: an integer "
                             "number of pixels in [0, 16] (0: no augmentation)")
        shape = getattr(observation_space, "shape", None)
        if not isinstance(observation_space, spaces.Box) or shape is None or len(shape) != 3:
            raise ValueError(
                f"{type(self).__name__} needs a 3-D Box of stacked frames, (C, H, W) or (H, W, C); got shape {shape}"
            )
        self.channels_first = is_image_space_channels_first(observation_space)
        if self.channels_first:
            n_channels, height, width = shape
        else:
            height, width, n_channels = shape
        self._check_frame_size(shape, height, width)
        super().__init__(observation_space, features_dim)
        self.cnn, flat_size = self._convolutions(n_channels, height, width)
        self.linear = nn.Sequential(nn.Linear(flat_size, features_dim), nn.ReLU())
        self.channels_last = channels_last
        self.bf16: bool | str = bf16
        self.bf16_auto = bf16 == "auto"
        self.precision = None  #: the measurement behind ``bf16="auto"`` (a PrecisionChoice), once made
        self.random_shift = random_shift
        if channels_last:
            self.cnn.to(memory_format=th.channels_last)

    @staticmethod
    def _check_frame_size(shape: tuple[int, ...], height: int, width: int) -> None:
        if _conv_out(height) == 0 or _conv_out(width) == 0:
            raise ValueError(
                f"NatureCNN needs frames of at least 36x36 pixels; observation shape {shape} gives "
                f"{height}x{width} frames"
            )

    def _convolutions(self, n_channels: int, height: int, width: int) -> tuple[nn.Module, int]:
        """The convolutional part, ending in a flatten, and the length of its output."""
        layers: list[nn.Module] = []
        in_channels = n_channels
        for out_channels, kernel, stride in NATURE_CONVS:
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=kernel, stride=stride), nn.ReLU()]
            in_channels = out_channels
        return nn.Sequential(*layers, nn.Flatten()), in_channels * _conv_out(height) * _conv_out(width)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        if observations.dtype == th.uint8:
            observations = observations.float().div_(255.0)
        if not self.channels_first:
            observations = observations.permute(0, 3, 1, 2)
        if self.random_shift and self.training:
            observations = shift_randomly(observations, self.random_shift)
        if self.channels_last:
            observations = observations.contiguous(memory_format=th.channels_last)
        if self.bf16_auto and self.precision is None:  # measured once: the run keeps one precision
            from sb3_breakout.precision import choose_bf16

            self.precision = choose_bf16(self, tuple(self._observation_space.shape), observations.device)
            self.bf16 = self.precision.bf16
        if self.bf16:
            with th.autocast(observations.device.type, dtype=th.bfloat16):
                return self.linear(self.cnn(observations)).float()
        return self.linear(self.cnn(observations))


class ResidualBlock(nn.Module):
    """``x + conv(relu(conv(relu(x))))`` with two 3x3 convolutions of ``channels`` channels, padded to keep
    the size: the pre-activation block of Espeholt et al. (2018) and Dopamine's ``Stack``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


#: channels of the three stacks of the IMPALA network (Espeholt et al. 2018; Dopamine's ``ImpalaEncoder``)
IMPALA_STACKS: tuple[int, ...] = (16, 32, 32)


class ImpalaCNN(NatureCNN):
    """
    The 15-layer residual network of IMPALA (Espeholt et al. 2018, "IMPALA: Scalable Distributed Deep-RL
    with Importance Weighted Actor-Learner Architectures") as Dopamine builds it for DQN-family agents
    (``ImpalaDQNNetwork``): three stacks of 16, 32 and 32 channels, each a 3x3 convolution, a 3x3 max-pool
    of stride 2 and two :class:`ResidualBlock`; ReLU, flatten (84x84 frames: 11x11x32 = 3,872), a
    Linear to ``features_dim`` (512) with ReLU.

    Why: at small budgets it learns Breakout far sooner per agent step than the Nature network in
    Dopamine's baselines (DQN's mean training return in its third 250k-step iteration: 38.1 with this
    network, 14.2 with Nature's); it costs ~6x the multiply-adds per frame (~54M against ~9.4M), so
    whether it wins in wall-clock on a CPU is measured (docs/results.md). Everything but the
    convolutions is :class:`NatureCNN`'s: the input layouts and scaling, ``channels_last``, ``bf16``
    (``"auto"`` measures this network), ``random_shift``; with ``net_arch=[]`` the QR-DQN head of 200
    quantiles sits on the 512 features (2,491,120 parameters for Breakout).
    """

    @staticmethod
    def _check_frame_size(shape: tuple[int, ...], height: int, width: int) -> None:
        pass  # padded convolutions and pooling: any frame size gives at least one pixel per stack

    def _convolutions(self, n_channels: int, height: int, width: int) -> tuple[nn.Module, int]:
        layers: list[nn.Module] = []
        in_channels = n_channels
        for channels in IMPALA_STACKS:
            layers += [nn.Conv2d(in_channels, channels, kernel_size=3, padding=1),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
                       ResidualBlock(channels), ResidualBlock(channels)]
            in_channels = channels
            height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        return nn.Sequential(*layers, nn.ReLU(), nn.Flatten()), in_channels * height * width


def shift_randomly(frames: th.Tensor, pad: int) -> th.Tensor:
    """
    DrQ's random shift: each item of ``frames`` (N, C, H, W) padded by ``pad`` pixels (edges repeated)
    and cropped back to (H, W) at an offset drawn uniformly from [0, 2 * pad] in each direction (torch's
    generator), the same for all C channels of an item: its stacked frames move together.
    """
    n, _, height, width = frames.shape
    padded = F.pad(frames, (pad, pad, pad, pad), mode="replicate")
    offsets = th.randint(0, 2 * pad + 1, (n, 2)).tolist()
    # one slice per item: ~8x faster on a CPU than one gather with per-item index tensors (32 x 4 x 84 x 84)
    return th.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets)])


def nature_policy_kwargs(n_quantiles: int | None = None, channels_last: bool = True,
                         bf16: bool = False, **kwargs) -> dict:
    """
    ``policy_kwargs`` that give the notebooks' network with SB3's DQN or sb3-contrib's QR-DQN:
    :class:`NatureCNN` and no hidden layer between it and the output layer.

    Why a helper: SB3 and sb3-contrib put two hidden layers of 64 units after any features extractor
    other than their own NatureCNN class unless ``net_arch=[]`` is given, so the obvious
    ``policy_kwargs=dict(features_extractor_class=NatureCNN)`` silently builds a Q-network of
    1,721,380 parameters instead of the notebooks' 1,686,180 (QR-DQN with 200 quantiles: 1,773,120
    instead of 2,094,528, its output layer squeezed through 64 units).

    >>> DQN("CnnPolicy", env, policy_kwargs=nature_policy_kwargs())                  # 1,686,180
    >>> QRDQN("CnnPolicy", env, policy_kwargs=nature_policy_kwargs(n_quantiles=200))  # 2,094,528

    :param n_quantiles: QR-DQN's quantiles per action; None leaves it out (DQN, or QR-DQN's default 200).
    :param channels_last: :class:`NatureCNN`'s NHWC memory format (default True).
    :param bf16: :class:`NatureCNN`'s bfloat16 autocast (default False).
    :param kwargs: more policy keyword arguments (``optimizer_kwargs``, ...), passed through; with
        ``optimizer_kwargs``, ``optimizer_class`` defaults to Adam (SB3's default), as sb3-contrib's QRDQN
        replaces ``optimizer_kwargs`` by its own when no ``optimizer_class`` is given.
    :return: a new dict for the ``policy_kwargs`` argument.
    """
    if "optimizer_kwargs" in kwargs:  # sb3-contrib's QRDQN drops optimizer_kwargs given without a class
        kwargs.setdefault("optimizer_class", th.optim.Adam)
    policy_kwargs = dict(features_extractor_class=NatureCNN, net_arch=[],
                         features_extractor_kwargs=dict(channels_last=channels_last, bf16=bf16), **kwargs)
    if n_quantiles is not None:
        policy_kwargs["n_quantiles"] = n_quantiles
    return policy_kwargs
