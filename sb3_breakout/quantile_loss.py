"""
QR-DQN's quantile Huber loss with its gradient computed in the same pass, block by block.

Why not sb3-contrib's ``quantile_huber_loss``: it is the same formula, written for clarity. For QR-DQN's
shapes (batch 32, 200 quantiles) it builds about a dozen full ``(32, 200, 200)`` tensors (5 MB each in
float32) in the forward pass and as many in autograd's backward pass, each one a trip through main
memory. On a CPU that made one QR-DQN update cost about twice a DQN update for the same network FLOPs
(``scripts/bench_throughput.py``). Here the loss and its gradient with respect to the current quantiles
are computed together, a few batch rows at a time so that each block stays in the CPU's cache, with the
Huber term written as ``c * (d - c / 2)`` where ``c = clamp(d, -1, 1)`` (whose derivative is ``c``):

    d[b, i, j] = target[b, j] - current[b, i]
    w[b, i, j] = |tau_i - 1{d[b, i, j] < 0}|,   tau_i = (i + 0.5) / N
    loss = sum_{b, i, j} w * huber(d) / (B * M)           (sb3-contrib: sum over i, mean over b and j)
    d loss / d current[b, i] = -sum_j w * clamp(d, -1, 1) / (B * M)

The value equals sb3-contrib's up to float rounding (the sums run in another order); the tests compare
both, and their gradients, on the same inputs, and train both learners side by side.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch as th

#: Elements of one ``(rows, N, M)`` block: 2**18 float32 values (1 MiB), so a block and the few
#: temporaries made from it stay in a CPU core's L2 cache. On a GPU the whole batch is one block.
BLOCK_ELEMENTS = 2**18


def block_rows(batch: int, n_quantiles: int, n_target_quantiles: int, device: th.device) -> int:
    """Batch rows per block: all of them on a GPU; on a CPU as many as fit in :data:`BLOCK_ELEMENTS`."""
    if device.type != "cpu":
        return batch
    return max(1, min(batch, BLOCK_ELEMENTS // (n_quantiles * n_target_quantiles)))


def _blocks(current: th.Tensor, target: th.Tensor) -> Iterator[tuple[th.Tensor, th.Tensor, th.Tensor]]:
    """
    A few batch rows at a time (:func:`block_rows`): ``sum_j w * clamp(d)``, the gradient's rows (up to
    sign and scale), then the loss's two factors ``w * clamp(d)`` and ``d - clamp(d) / 2``, each
    ``(rows, N, M)``, whose product is ``w * huber(d)``. The sum is taken before the second factor is
    made in place, while the first is still in cache.
    """
    batch, n_quantiles = current.shape
    n_target = target.shape[1]
    tau = ((th.arange(n_quantiles, device=current.device, dtype=current.dtype) + 0.5) / n_quantiles).view(1, -1, 1)
    one_minus_tau = 1.0 - tau
    rows = block_rows(batch, n_quantiles, n_target, current.device)
    for start in range(0, batch, rows):
        delta = target[start:start + rows].unsqueeze(1) - current[start:start + rows].unsqueeze(2)
        clipped = delta.clamp(-1.0, 1.0)
        # w * clamp(d): tau on the positive side, (1 - tau) on the negative side
        weighted = clipped.clamp(min=0.0).mul_(tau).add_(clipped.clamp(max=0.0).mul_(one_minus_tau))
        grad_rows = weighted.sum(dim=2)
        # w * huber(d) = w * clamp(d) * (d - clamp(d) / 2)
        yield grad_rows, weighted, delta.sub_(clipped, alpha=0.5)


class _QuantileHuberLoss(th.autograd.Function):
    """Forward returns the loss and keeps its gradient with respect to ``current``; backward scales it."""

    @staticmethod
    def forward(ctx, current: th.Tensor, target: th.Tensor) -> th.Tensor:  # type: ignore[override]
        scale = 1.0 / (current.shape[0] * target.shape[1])
        total = current.new_zeros(())
        grads = []
        for grad_rows, weighted, half_huber in _blocks(current, target):
            grads.append(grad_rows)
            total += th.dot(weighted.view(-1), half_huber.view(-1))
        ctx.save_for_backward(th.cat(grads).mul_(-scale))
        return total * scale

    @staticmethod
    def backward(ctx, grad_output: th.Tensor) -> tuple[th.Tensor, None]:  # type: ignore[override]
        (grad_current,) = ctx.saved_tensors
        return grad_current * grad_output, None


class _WeightedQuantileHuberLoss(th.autograd.Function):
    """As :class:`_QuantileHuberLoss` with a weight per batch row; also returns each row's own loss."""

    @staticmethod
    def forward(ctx, current: th.Tensor, target: th.Tensor, weights: th.Tensor):  # type: ignore[override]
        batch, n_target = current.shape[0], target.shape[1]
        per_row, grads = [], []
        for grad_rows, weighted, half_huber in _blocks(current, target):
            grads.append(grad_rows)
            per_row.append((weighted * half_huber).sum(dim=(1, 2)))
        # each row's loss as sb3-contrib counts it for a batch of one: summed over N, averaged over M
        row_losses = th.cat(per_row).div_(n_target)
        w = weights.reshape(-1).to(current.dtype)
        ctx.save_for_backward(th.cat(grads).mul_(w[:, None] * (-1.0 / (batch * n_target))))
        ctx.mark_non_differentiable(row_losses)
        return (row_losses * w).sum() / batch, row_losses

    @staticmethod
    def backward(ctx, grad_output: th.Tensor, _grad_rows: th.Tensor):  # type: ignore[override]
        (grad_current,) = ctx.saved_tensors
        return grad_current * grad_output, None, None


def _check_quantiles(current_quantiles: th.Tensor, target_quantiles: th.Tensor) -> None:
    """Both losses' argument checks: 2-D, one batch size, a target without gradient."""
    if current_quantiles.ndim != 2 or target_quantiles.ndim != 2:
        raise ValueError(f"quantiles must be (batch, n_quantiles): got {tuple(current_quantiles.shape)} "
                         f"and {tuple(target_quantiles.shape)}")
    if current_quantiles.shape[0] != target_quantiles.shape[0]:
        raise ValueError(f"batch sizes differ: {current_quantiles.shape[0]} and {target_quantiles.shape[0]}")
    if target_quantiles.requires_grad:
        raise ValueError("target_quantiles must not require a gradient (compute them under torch.no_grad())")


def weighted_quantile_huber_loss(
    current_quantiles: th.Tensor, target_quantiles: th.Tensor, weights: th.Tensor
) -> tuple[th.Tensor, th.Tensor]:
    """
    :func:`quantile_huber_loss` with a weight per sample (prioritized replay's importance weights):
    ``mean_b(w_b * loss_b)``, and each sample's unweighted ``loss_b`` (no gradient) for its new priority.
    With all weights 1 the loss equals :func:`quantile_huber_loss`.

    :param weights: ``(batch,)`` or ``(batch, 1)``.
    :return: the scalar loss and the ``(batch,)`` per-sample losses.
    """
    _check_quantiles(current_quantiles, target_quantiles)
    if weights.numel() != current_quantiles.shape[0]:
        raise ValueError(f"{weights.numel()} weights for a batch of {current_quantiles.shape[0]}")
    current = current_quantiles.float()
    return _WeightedQuantileHuberLoss.apply(current, target_quantiles.to(current.dtype), weights)


def quantile_huber_loss(current_quantiles: th.Tensor, target_quantiles: th.Tensor) -> th.Tensor:
    """
    The quantile regression loss of QR-DQN (Dabney et al. 2018), as sb3-contrib's
    ``quantile_huber_loss(current, target, sum_over_quantiles=True)`` for QR-DQN's 2-D case.

    :param current_quantiles: ``(batch, N)`` quantiles of the taken actions, with gradient.
    :param target_quantiles: ``(batch, M)`` TD targets, without gradient (QR-DQN computes them under
        ``no_grad``; a target that needs a gradient is refused rather than silently given none).
    :return: a scalar: summed over the N current quantiles, averaged over the batch and the M targets.
    """
    _check_quantiles(current_quantiles, target_quantiles)
    current = current_quantiles.float()
    target = target_quantiles.to(current.dtype)
    return _QuantileHuberLoss.apply(current, target)
