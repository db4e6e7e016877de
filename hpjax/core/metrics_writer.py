"""Run metrics: ``WORKDIR/metrics.jsonl`` (one JSON object per record) + TensorBoard events."""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from hpjax.core import io
from hpjax.core.errors import WorkdirError


def _plain(v: Any) -> Any:
  if isinstance(v, dict):
    return {k: _plain(x) for k, x in v.items()}
  a = np.asarray(v)
  return a.item() if a.ndim == 0 else a.tolist()


class MetricsWriter:
  """Appends records from process 0 only; other processes write nothing."""

  def __init__(self, workdir: str, *, resume_step: int | None = None):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.active = jax.process_index() == 0
    self._tb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None and os.path.exists(self.path):
      # Records past the restored checkpoint belong to the interrupted attempt and are
      # logged again by the resumed run: drop them so each step appears once.
      keep = [line for line, r in _lines(self.path) if r.get("step", 0) <= resume_step]
      io.write_text(self.path, "".join(keep))
    from tensorboardX import SummaryWriter  # import late: only process 0 needs it
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, kind: str, metrics: dict[str, Any]) -> None:
    if not self.active:
      return
    record = {"step": int(step), "kind": kind, **_plain(metrics)}
    io.append_text(self.path, json.dumps(record) + "\n")  # whole line or nothing
    for k, v in record.items():
      if isinstance(v, (int, float)) and k != "step":
        self._tb.add_scalar(f"{kind}/{k}", v, step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _lines(path: str) -> list[tuple[str, dict[str, Any]]]:
  """``(line, record)`` of each record of PATH. A last line that is not JSON (torn by a
  kill during an append) is left out; anywhere else it raises :class:`WorkdirError`."""
  with open(path) as f:
    lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
  out = []
  for i, line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if i == lines[-1][0]:
        break
      raise WorkdirError(f"{path} line {i}: expected a JSON record, got {line[:40]!r} "
                         f"({e.msg})") from None
    if not isinstance(record, dict):
      raise WorkdirError(f"{path} line {i}: expected a JSON object, got {line[:40]!r}")
    out.append((line if line.endswith("\n") else line + "\n", record))
  return out


def read_records(path: str) -> list[dict[str, Any]]:
  """The records of a JSON-lines file (a torn last line left out, see :func:`_lines`)."""
  return [r for _, r in _lines(path)]


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  return read_records(path)
