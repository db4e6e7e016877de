"""PyTorch HPNet and its baseline: the same architecture as :mod:`hpjax.hpnet.model`.

The reference implementation the JAX benchmarks compare against (``python -m
benchmarks --suites hpnet``): the dilation extractor (3×3 convs without bias,
BatchNorm, LeakyReLU(0.01)), K attention heads computed together as one einsum
over stacked parameters, GAP, and the loss of :func:`hpjax.hpnet.losses.attribute_loss`
(BCE summed over attributes and averaged over images, plus λ·‖M‖₁ per image
averaged over the batch), trained with Adam. It is written the way a PyTorch
user would write it: whole-batch tensors, autograd, optionally ``torch.compile``.

:func:`load_jax_variables` copies a Flax ``{"params", "batch_stats"}`` tree into
the modules, so the two frameworks can be checked for equal logits on equal weights
(``tests/core/test_benchmarks.py``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn


class Extractor(nn.Module):
  """The dilation network f_f: stride 1, padding = dilation, so H×W is kept.

  Args:
    in_channels: image channels.
    features: output channels per conv; the last is C.
    dilations: dilation per conv.
  """

  def __init__(self, in_channels: int, features: Sequence[int], dilations: Sequence[int]):
    super().__init__()
    layers: list[nn.Module] = []
    c = in_channels
    for width, d in zip(features, dilations):
      # Flax BatchNorm(momentum=0.9) keeps 0.9 of the old statistic; PyTorch's momentum
      # is the weight of the new one. eps 1e-5 in both.
      layers += [nn.Conv2d(c, width, 3, padding=d, dilation=d, bias=False),
                 nn.BatchNorm2d(width, eps=1e-5, momentum=0.1), nn.LeakyReLU(0.01)]
      c = width
    self.layers = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """``[batch, channels, H, W]`` → ``[batch, C, H, W]``."""
    return self.layers(x)


class TorchHPNet(nn.Module):
  """Extractor + K attention heads (paper A, Eq. 8–9), as in ``hpjax.hpnet.model.HPNet``.

  ``forward`` takes NHWC images in [0, 1] (the JAX layout) and returns
  ``(logits [batch, K], mask_l1 [batch])``. ``matmul_dtype=torch.bfloat16`` runs the
  heads' mask einsum (and so its autograd GEMMs) on bfloat16 operands, as
  ``HPNet(head_matmul_dtype="bfloat16")`` does (PyTorch also rounds its output to
  bfloat16; JAX keeps the float32 accumulator).
  """

  def __init__(self, in_channels: int, num_attributes: int,
               features: Sequence[int] = (32, 64, 64, 128),
               dilations: Sequence[int] = (1, 2, 3, 2), matmul_dtype: Any = None):
    super().__init__()
    k, c = num_attributes, features[-1]
    self.matmul_dtype = matmul_dtype
    self.extractor = Extractor(in_channels, features, dilations)
    self.mask_kernel = nn.Parameter(torch.randn(k, c, c) / c ** 0.5)
    self.mask_bias = nn.Parameter(torch.zeros(k, c))
    self.kernel = nn.Parameter(torch.randn(k, c) / c ** 0.5)
    self.bias = nn.Parameter(torch.zeros(k))

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = self.extractor(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # [b, H, W, C]
    # All K heads in one einsum: [b, H, W, C] x [K, C, C] -> [b, H, W, K, C].
    if self.matmul_dtype is None:
      pre = torch.einsum("bhwc,kcd->bhwkd", f, self.mask_kernel)
    else:
      pre = torch.einsum("bhwc,kcd->bhwkd", f.to(self.matmul_dtype),
                         self.mask_kernel.to(self.matmul_dtype)).float()
    masks = torch.sigmoid(pre + self.mask_bias)
    pooled = (masks * f.unsqueeze(3)).mean(dim=(1, 2))  # GAP(M ⊙ f): [b, K, C]
    logits = torch.einsum("bkd,kd->bk", pooled, self.kernel) + self.bias
    return logits, masks.sum(dim=(1, 2, 3, 4))


class TorchBaselineNet(nn.Module):
  """The same extractor with GAP + one dense layer for all K (no attention)."""

  def __init__(self, in_channels: int, num_attributes: int,
               features: Sequence[int] = (32, 64, 64, 128),
               dilations: Sequence[int] = (1, 2, 3, 2)):
    super().__init__()
    self.extractor = Extractor(in_channels, features, dilations)
    self.classifier = nn.Linear(features[-1], num_attributes)

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = self.extractor(x.permute(0, 3, 1, 2))
    return self.classifier(f.mean(dim=(2, 3))), torch.zeros(x.shape[0], device=x.device)


def attribute_loss(logits: torch.Tensor, labels: torch.Tensor, mask_l1: torch.Tensor,
                   l1_lambda: float = 1e-5) -> torch.Tensor:
  """Eq. 10 as in :func:`hpjax.hpnet.losses.attribute_loss` with ``l1_reduction="sum"``."""
  bce = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype),
                                                       reduction="none").sum(-1).mean()
  return bce + l1_lambda * mask_l1.mean()


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, *, l1_lambda: float = 1e-5,
                    compile: bool = False):
  """``step(images, labels) -> loss``: forward, loss, backward and an Adam update.

  With ``compile``, the forward and the loss go through ``torch.compile`` (its
  AOTAutograd graph also compiles the backward); the optimizer update stays eager.
  """
  def objective(images, labels):
    logits, mask_l1 = model(images)
    return attribute_loss(logits, labels, mask_l1, l1_lambda)

  objective_fn = torch.compile(objective) if compile else objective

  def step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = objective_fn(images, labels)
    loss.backward()
    optimizer.step()
    return loss.detach()

  return step


def load_jax_variables(model: nn.Module, variables: dict[str, Any]) -> None:
  """Copies Flax HPNet/BaselineNet variables into ``model`` (in place).

  Conv kernels go from HWIO to OIHW; BatchNorm ``scale``/``bias`` and the running
  ``mean``/``var``; the heads' stacked arrays as they are; the baseline's Dense
  kernel ``[C, K]`` is transposed.
  """
  params, stats = variables["params"], variables.get("batch_stats", {})

  def t(a):
    return torch.from_numpy(np.array(a, dtype=np.float32))

  ext = params["extractor"]
  convs = [m for m in model.extractor.layers if isinstance(m, nn.Conv2d)]
  bns = [m for m in model.extractor.layers if isinstance(m, nn.BatchNorm2d)]
  if len(convs) != sum(name.startswith("conv") for name in ext):
    raise ValueError(f"extractor depth differs: torch has {len(convs)} convs, JAX params "
                     f"have {sorted(ext)}")
  with torch.no_grad():
    for i, (conv, bn) in enumerate(zip(convs, bns)):
      conv.weight.copy_(t(ext[f"conv{i}"]["kernel"]).permute(3, 2, 0, 1))
      bn.weight.copy_(t(ext[f"bn{i}"]["scale"]))
      bn.bias.copy_(t(ext[f"bn{i}"]["bias"]))
      if stats:
        bn.running_mean.copy_(t(stats["extractor"][f"bn{i}"]["mean"]))
        bn.running_var.copy_(t(stats["extractor"][f"bn{i}"]["var"]))
    if isinstance(model, TorchHPNet):
      for name in ("mask_kernel", "mask_bias", "kernel", "bias"):
        getattr(model, name).copy_(t(params["heads"][name]))
    else:
      model.classifier.weight.copy_(t(params["classifier"]["kernel"]).T)
      model.classifier.bias.copy_(t(params["classifier"]["bias"]))
