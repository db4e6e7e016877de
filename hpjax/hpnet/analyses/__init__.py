"""Paper A's analyses, one module per claim, behind one registry.

Every analysis has the same contract (big_vision's evaluators: one shape, many
implementations)::

  run(trained: TrainedRun, *, baseline: TrainedRun | None = None, **sizes) -> dict

It reads what it needs from the trained run (and the baseline's, for a reference),
writes its JSON and figures under ``WORKDIR/analysis/`` (:func:`hpjax.hpnet.runs.output_dir`)
and returns the result it wrote. ``sizes`` are the analysis' own keyword arguments
(numbers of images, draws, seeds). The report and the ``evaluate.*`` commands iterate
:data:`ANALYSES` or call :func:`run` with a name.

* ``pruning`` (:mod:`.pruning`): semantic channel pruning, Fig. 7.
* ``robustness`` (:mod:`.robustness`): the mask transformation under input noise, Fig. 8.
* ``attention`` (:mod:`.attention`): Figs. 4–6, Table 4 and measured localisation.
* ``predictability`` (:mod:`.predictability`): human predictability as a number.
"""
from __future__ import annotations

from typing import Any, Callable

from hpjax.hpnet import runs
from hpjax.hpnet.analyses import attention, predictability, pruning, robustness

Analysis = Callable[..., dict[str, Any]]

ANALYSES: dict[str, Analysis] = {
    "pruning": pruning.run,
    "robustness": robustness.run,
    "attention": attention.run,
    "predictability": predictability.run,
}


def run(name: str, workdir: str, *, baseline_workdir: str | None = None,
        **sizes: Any) -> dict[str, Any]:
  """Loads ``workdir`` and its baseline (``baseline_workdir``, else ``WORKDIR/baseline``
  when trained; :func:`hpjax.hpnet.runs.load_runs`) and runs the analysis ``name`` with
  ``sizes``.

  Raises:
    ValueError: ``name`` is not in :data:`ANALYSES`.
    ConfigError: a workdir has no checkpoints, or the analysis needs HPNet.
  """
  if name not in ANALYSES:
    raise ValueError(f"expected an analysis in {tuple(ANALYSES)}, got {name!r}")
  trained, baseline = runs.load_runs(workdir, baseline_workdir)
  return ANALYSES[name](trained, baseline=baseline, **sizes)
