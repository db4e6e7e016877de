"""Taps of any Flax model: its submodules' outputs as image-score taps (docs/papers.md §B1).

The image score (:func:`~hpjax.image_score.reference.fit_reference`,
:func:`~hpjax.image_score.scoring.score`,
:func:`~hpjax.image_score.fused.make_fused_scorer`,
:class:`~hpjax.image_score.reference.ReferenceAccumulator`) takes a forward pass of the
form ``f(variables, images) -> (logits, {"taps": {name: [B, ...]}})``. This project's
classifiers (:mod:`hpjax.image_score.models`) return that form themselves;
:func:`tapped_apply` builds it for any other model, unchanged:

.. code-block:: python

   apply = jax.jit(tapped_apply(model, train=False))   # model: any flax.linen Module
   logits, aux = apply(variables, images)               # aux["taps"]: {name: [B, ...]}

*Linen*: the taps are read with ``Module.apply(..., capture_intermediates=...)`` (the
output of every submodule's ``__call__``) and from the ``"intermediates"`` collection
(what the model stores with ``self.sow("intermediates", name, x)``). A tap is named by
its module path joined by ``"/"`` (``"Conv_0"``, ``"block2/conv"``); a sown value by
the path of the module that sowed it plus its name (``"block2/pre"``); the output of a
method other than ``__call__`` (selected with a callable filter) by the path plus the
method name. A module called ``k > 1`` times gives ``k`` taps, ``name[0]`` …
``name[k-1]``. Only outputs that are a single array with the images' batch dimension
can be taps (tuples, dicts and scalars are skipped).

*nnx* (:class:`flax.nnx.Module`): the same taps, read with ``nnx.capture(...,
method_outputs=nnx.Intermediate)`` and from values sown with ``self.sow(nnx.Intermediate,
name, x)``; the variables are the model's state (``nnx.state(model)``) and the graph is
the model's when :func:`tapped_apply` is called (call ``model.eval()`` first if it has
BatchNorm or Dropout). Path parts that are list indices are written as numbers
(``"blocks/0"``).

**Which taps** (``taps=``): by default (None) the outputs of the model's top-level
submodules (those not called inside another captured submodule: for linen, the
children of the model) and every sown value. Or a list of exact tap names (each must
exist), a regular expression (a ``str`` or compiled pattern, matched against the whole
name), or a callable ``(module, method_name) -> bool`` choosing method outputs as
``capture_intermediates`` does (sown values are then not taps). :func:`tap_names`
lists what can be tapped, with shapes.

**The logits are left out** (``exclude_logits=True``): the tap whose output *is* the
array the model returns as its logits (its classifier, when the model returns that
output unchanged) is dropped. On a logits tap a class's mask usually holds one unit,
and with ε = 1 such a layer adds one coarse step (0 or log ½ ≈ −0.69 per image,
docs/papers.md §B3) that weighs as much as missing half of a 512-unit layer. A
classifier followed by other operations (a cast, a temperature) is not recognised; leave
it out with the filter.
"""
from __future__ import annotations

import re
import sys
from typing import Any, Callable, Mapping, NamedTuple, Sequence, Union

import jax

TapFilter = Union[None, str, "re.Pattern[str]", Sequence[str], Callable[[Any, str], bool]]
TappedApply = Callable[[Any, jax.Array], tuple[jax.Array, dict[str, dict[str, jax.Array]]]]

_SOWN, _CALL, _METHOD = "sown", "call", "method"


def tapped_apply(model_or_apply: Any, *, taps: TapFilter = None, exclude_logits: bool = True,
                 method: Any = None, logits_fn: Callable[[Any], jax.Array] | None = None,
                 **apply_kwargs: Any) -> TappedApply:
  """A forward pass of any Flax model in the form the image score takes.

  Args:
    model_or_apply: a ``flax.linen`` Module; or a function with the interface of its
      ``apply`` (it must accept ``capture_intermediates=`` and ``mutable=``), e.g.
      ``functools.partial(model.apply, train=False)``; or a ``flax.nnx`` Module.
    taps: which outputs are taps: None (the top-level submodules' outputs and every
      sown value), a list of tap names, a regular expression, or a callable
      ``(module, method_name) -> bool`` (see the module docstring).
    exclude_logits: drop the tap that is the model's logits (recommended: see the module
      docstring). A list naming that tap then raises.
    method: the model's method to run instead of ``__call__`` (a name or a function, as
      in ``Module.apply``).
    logits_fn: maps the model's output to the logits ``[B, C]``; by default the output
      itself, or its first element when it is a tuple or list.
    **apply_kwargs: passed to the model's apply (e.g. ``train=False``); not ``mutable``
      or ``capture_intermediates``, which this function sets.

  Returns:
    ``f(variables, images) -> (logits [B, C], {"taps": {name: [B, ...]}})``, pure and
    jittable: what :func:`~hpjax.image_score.reference.fit_reference` (on its taps),
    :func:`~hpjax.image_score.scoring.score` and
    :func:`~hpjax.image_score.fused.make_fused_scorer` take. A filter that selects no
    tap raises ``ValueError`` on the first call (when ``f`` is traced).

  References:
    docs/papers.md §B1, §B3.
  """
  run = _runner(model_or_apply, method, apply_kwargs, "tapped_apply")
  select = _Selector(taps, "tapped_apply")

  def f(variables: Any, images: jax.Array) -> tuple[jax.Array, dict[str, dict[str, Any]]]:
    out, entries = run(variables, images, select)
    logits = _logits(out, logits_fn, "tapped_apply")
    chosen = select(entries, logits, images.shape[0], exclude_logits, "tapped_apply")
    return logits, {"taps": chosen}

  return f


def tap_names(model_or_apply: Any, variables: Any, example_images: Any, *,
              taps: TapFilter = ".*", exclude_logits: bool = False, method: Any = None,
              logits_fn: Callable[[Any], jax.Array] | None = None,
              **apply_kwargs: Any) -> dict[str, tuple[int, ...]]:
  """What a model offers as taps, ``{name: shape}``, to choose ``taps=`` of :func:`tapped_apply`.

  By default every candidate is listed, the logits included (``taps=".*"``,
  ``exclude_logits=False``); with the same ``taps`` and ``exclude_logits`` as
  :func:`tapped_apply` it lists what that would tap. Runs no computation
  (``jax.eval_shape``).

  Args:
    model_or_apply: as in :func:`tapped_apply`.
    variables: the model's variables (arrays or ``jax.ShapeDtypeStruct`` leaves).
    example_images: images ``[B, ...]`` (or a ``jax.ShapeDtypeStruct``).
    taps, exclude_logits, method, logits_fn, **apply_kwargs: as in :func:`tapped_apply`.

  Returns:
    ``{name: (B, ...)}`` in the order the outputs were captured (linen: a module's
    inner taps before its own output; nnx: sorted by path).

  References:
    docs/papers.md §B1.
  """
  run = _runner(model_or_apply, method, apply_kwargs, "tap_names")
  select = _Selector(taps, "tap_names")
  order = []  # jax sorts the keys of the returned dict; the trace keeps network order

  def f(variables, images):
    out, entries = run(variables, images, select)
    logits = _logits(out, logits_fn, "tap_names")
    chosen = select(entries, logits, images.shape[0], exclude_logits, "tap_names")
    order[:] = list(chosen)
    return chosen

  shapes = jax.eval_shape(f, variables, example_images)
  return {k: tuple(shapes[k].shape) for k in order}


# ----------------------------------------------------------------------------
# Running the model: (output, entries), entries = [(key, kind, path, value, chosen)]


def _runner(model_or_apply: Any, method: Any, apply_kwargs: dict[str, Any], where: str
            ) -> Callable[..., tuple[Any, list[tuple]]]:
  bad = sorted({"mutable", "capture_intermediates"} & set(apply_kwargs))
  if bad:
    raise ValueError(f"{where}: expected apply arguments without {bad} (set here), got "
                     f"{sorted(apply_kwargs)}")
  nnx = sys.modules.get("flax.nnx")
  if nnx is not None and isinstance(model_or_apply, nnx.Module):
    return _nnx_runner(model_or_apply, method, apply_kwargs)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  if isinstance(model_or_apply, nn.Module):
    apply = model_or_apply.apply
  elif callable(model_or_apply):
    apply = model_or_apply
  else:
    raise ValueError(f"{where}: expected a flax.linen Module, its apply function or a "
                     f"flax.nnx Module, got {type(model_or_apply).__name__}")
  kwargs = dict(apply_kwargs) if method is None else dict(apply_kwargs, method=method)

  def run(variables, images, select):
    captured = {}  # (path, method name) -> chosen by a callable filter

    def record(module, method_name):
      chosen = select.wants(module, method_name)
      if chosen or method_name == "__call__":
        captured[(tuple(module.path), method_name)] = chosen
        return True
      return False

    out, state = apply(variables, images, capture_intermediates=record,
                       mutable=["intermediates"], **kwargs)
    entries = []
    _walk_linen(state.get("intermediates", {}), (), captured, entries)
    return out, entries

  return run


def _walk_linen(tree: Mapping[str, Any], path: tuple, captured: dict, entries: list) -> None:
  for key, value in tree.items():
    if (path, key) in captured:
      kind = _CALL if key == "__call__" else _METHOD
      entries.append((key, kind, path, value, captured[(path, key)]))
    elif isinstance(value, Mapping):
      _walk_linen(value, path + (key,), captured, entries)
    else:
      entries.append((key, _SOWN, path, value, False))


def _nnx_runner(model: Any, method: Any, apply_kwargs: dict[str, Any]) -> Callable[..., Any]:
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, _ = nnx.split(model)

  def run(variables, images, select):
    m = nnx.merge(graphdef, variables)
    modules = {tuple(p): mod for p, mod in nnx.iter_modules(m)}
    wrap = lambda fn: nnx.capture(fn, nnx.Intermediate, method_outputs=nnx.Intermediate)
    if method is None:
      out, inter = wrap(m)(images, **apply_kwargs)
    elif isinstance(method, str):
      out, inter = wrap(getattr(m, method))(images, **apply_kwargs)
    else:
      out, inter = wrap(method)(m, images, **apply_kwargs)
    entries = []
    for path, var in nnx.to_flat_state(inter):
      path, key = tuple(path[:-1]), path[-1]
      mod = modules.get(path)
      if key == "__call__":
        kind = _CALL
      elif mod is not None and callable(getattr(type(mod), key, None)):
        kind = _METHOD
      else:
        kind = _SOWN
      chosen = kind != _SOWN and mod is not None and select.wants(mod, key)
      entries.append((key, kind, path, var.get_value(), chosen))
    return out, entries

  return run


# ----------------------------------------------------------------------------
# Choosing the taps


class _Selector:
  """The ``taps`` filter, checked once; called on a forward pass's entries."""

  def __init__(self, taps: TapFilter, where: str):
    self.taps = taps
    self.regex = None
    self.is_callable = callable(taps) and not isinstance(taps, re.Pattern)
    if isinstance(taps, str):
      try:
        self.regex = re.compile(taps)
      except re.error as e:
        raise ValueError(f"{where}: expected taps as a valid regular expression, got {taps!r} "
                         f"({e})") from None
    elif isinstance(taps, re.Pattern):
      self.regex = taps
    elif not (taps is None or self.is_callable or _is_names(taps)):
      raise ValueError(f"{where}: expected taps as None, a list of tap names, a regular "
                       f"expression or a callable (module, method_name) -> bool, got {taps!r}")

  def wants(self, module: Any, method_name: str) -> bool:
    """Whether a callable filter chooses this method's output."""
    return bool(self.is_callable and self.taps(module, method_name))

  def __call__(self, entries: list, logits: Any, batch: int, exclude_logits: bool,
               where: str) -> dict[str, Any]:
    cands = _candidates(entries, batch)
    logits_names = [n for n, c in cands.items() if c.value is logits]
    available = [n for n in cands if not (exclude_logits and n in logits_names)]
    if self.taps is None:
      calls = {c.path for c in cands.values() if c.kind == _CALL}
      names = [n for n in available if cands[n].kind == _SOWN or (
          cands[n].kind == _CALL and not any(cands[n].path[:i] in calls
                                             for i in range(1, len(cands[n].path))))]
    elif self.regex is not None:
      names = [n for n in available if self.regex.fullmatch(n)]
    elif self.is_callable:
      names = [n for n in available if cands[n].chosen]
    else:
      names = list(self.taps)
      logit_taps = [n for n in names if exclude_logits and n in logits_names]
      if logit_taps:
        raise ValueError(f"{where}: expected taps other than the model's logits, got "
                         f"{logit_taps} in taps filter {self.taps!r}; pass exclude_logits=False "
                         "to use it")
      missing = [n for n in names if n not in cands]
      if missing:
        raise ValueError(f"{where}: taps filter {self.taps!r} names {missing}, which the model "
                         f"does not have; its taps are {list(cands)}")
    if not names:
      note = (f" (the logits {logits_names} left out: exclude_logits=True)"
              if exclude_logits and logits_names else "")
      raise ValueError(f"{where}: taps filter {self._describe()} matched none of the model's "
                       f"taps {list(cands)}{note}")
    return {n: cands[n].value for n in names}

  def _describe(self) -> str:
    if self.is_callable:
      return getattr(self.taps, "__name__", repr(self.taps))
    return repr(self.taps.pattern if isinstance(self.taps, re.Pattern) else self.taps)


def _is_names(taps: Any) -> bool:
  return (isinstance(taps, Sequence) and not isinstance(taps, (str, bytes)) and len(taps) > 0
          and all(isinstance(n, str) for n in taps))


class _Candidate(NamedTuple):
  kind: str
  path: tuple
  value: Any
  chosen: bool


def _candidates(entries: list, batch: int) -> dict[str, _Candidate]:
  """``{name: candidate}`` of the outputs that are one ``[batch, ...]`` array; a tuple of
  ``k > 1`` values (a module called ``k`` times) gives ``name[0]`` … ``name[k-1]``."""
  out = {}
  for key, kind, path, value, chosen in entries:
    if kind == _CALL and not path:
      continue  # the model's own output
    name = "/".join([str(p) for p in path] + ([] if kind == _CALL else [str(key)]))
    values = list(value) if isinstance(value, tuple) else [value]
    named = [(name, values[0])] if len(values) == 1 else [
        (f"{name}[{i}]", v) for i, v in enumerate(values)]
    for n, v in named:
      shape = getattr(v, "shape", None)
      if shape is not None and hasattr(v, "dtype") and len(shape) >= 1 and shape[0] == batch:
        out[n] = _Candidate(kind, path, v, chosen)
  return out


def _logits(out: Any, logits_fn: Callable[[Any], Any] | None, where: str) -> jax.Array:
  if logits_fn is not None:
    return logits_fn(out)
  if isinstance(out, (tuple, list)) and out:
    out = out[0]
  if not hasattr(out, "shape") or len(out.shape) != 2:
    raise ValueError(f"{where}: expected the model to return logits [B, C] (or a tuple "
                     f"starting with them), got {getattr(out, 'shape', type(out).__name__)}; "
                     "pass logits_fn")
  return out
