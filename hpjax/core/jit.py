"""A model's ``apply`` as a jit static argument that two loads of the same model share.

The streamed passes over a data set (statistics, perturbations, saliency) are jitted
functions that take the model's ``apply`` as a static argument. Bound methods compare
by the identity of their object, so two loads of the same model (or the report after
the analyses) would each compile again; a Flax module compares by its fields, so
:func:`static` replaces ``module.apply`` by the module and :func:`call` calls it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

ApplyFn = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class ModuleApply:
  """``module.apply`` that compares (and hashes) by the module's fields, not its identity:
  the train state's ``apply_fn``, so that two states of equal models (a resumed run, a
  second seed in one process) are one static structure and share one compilation."""

  module: nn.Module

  def __call__(self, *args, **kwargs) -> Any:
    return self.module.apply(*args, **kwargs)


def static(apply_fn: ApplyFn) -> Any:
  """A value-comparing stand-in for ``apply_fn`` as a jit static argument."""
  if isinstance(apply_fn, ModuleApply):
    return apply_fn.module
  owner = getattr(apply_fn, "__self__", None)
  return owner if isinstance(owner, nn.Module) else apply_fn


def call(static_fn: Any, *args, **kwargs) -> Any:
  """Calls what :func:`static` returned: ``module.apply(...)`` or the function itself."""
  if isinstance(static_fn, nn.Module):
    return static_fn.apply(*args, **kwargs)
  return static_fn(*args, **kwargs)
