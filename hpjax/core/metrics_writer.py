"""Run metrics: ``WORKDIR/metrics.jsonl`` (one JSON object per record) + TensorBoard events."""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from hpjax.core import io


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
      with open(self.path) as f:
        keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= resume_step]
      io.write_text(self.path, "".join(keep))
    from tensorboardX import SummaryWriter  # import late: only process 0 needs it
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, kind: str, metrics: dict[str, Any]) -> None:
    if not self.active:
      return
    record = {"step": int(step), "kind": kind, **_plain(metrics)}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in record.items():
      if isinstance(v, (int, float)) and k != "step":
        self._tb.add_scalar(f"{kind}/{k}", v, step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
