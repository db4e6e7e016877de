"""Reading a compiled, partitioned program (the sharding tests): collectives, loop trip
counts, per-device FLOPs and the batch sizes of its tensors.

A program compiled for N devices is the per-device program: its shapes are local, so a
global-batch dimension in it means the batch was gathered.
"""
from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import Mesh

_SHAPE = re.compile(r"\b(?:pred|[suf]\d+|bf16)\[([\d,]*)\]")


def mesh(n: int) -> Mesh:
  """A ``data`` mesh over the first ``n`` devices (``n = 1``: the reference)."""
  return Mesh(np.asarray(jax.devices()[:n]), ("data",))


def hlo(compiled) -> str:
  return compiled.as_text()


def trip_counts(text: str) -> list[int]:
  """The known trip counts of the program's ``while`` loops."""
  return [int(n) for n in re.findall(r'known_trip_count":\{"n":"(\d+)"', text)]


def _collective(text: str, op: str) -> list[list[tuple[int, ...]]]:
  """Per ``op`` instruction, the shapes it produces (a tuple for a combined one)."""
  out = []
  for result in re.findall(rf"= (\([^)]*\)|\S+) {op}(?:-start)?\(", text):
    out.append([tuple(int(d) for d in dims.split(",") if d) for dims in _SHAPE.findall(result)])
  return out


def all_gathers(text: str) -> list[list[tuple[int, ...]]]:
  return _collective(text, "all-gather")


def all_reduces(text: str) -> list[list[tuple[int, ...]]]:
  return _collective(text, "all-reduce")


def all_reduced_elements(text: str) -> int:
  """Elements all-reduced by the program, over all its all-reduces."""
  return sum(int(np.prod(s)) for shapes in all_reduces(text) for s in shapes)


def leading_dims(text: str) -> set[int]:
  """The first dimension of every tensor shape the program names."""
  return {int(dims.split(",")[0]) for dims in _SHAPE.findall(text) if dims}


def flops(compiled) -> float:
  """XLA's FLOP count of the (per-device) program."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])
