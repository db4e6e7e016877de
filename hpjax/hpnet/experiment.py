"""Multi-attribute classification with HPNet: build, train, evaluate (library side of
``python -m train.attributes`` and ``python -m evaluate.attributes``)."""
from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hpjax.core import classification_metrics, distributed, io, training
from hpjax.hpnet.config import AttributesConfig
from hpjax.data import pipeline
from hpjax.hpnet.losses import attribute_accuracy, attribute_loss


def open_split(config: AttributesConfig, split: str) -> Any:
  """The config's data source for ``split`` in {"train", "val", "test"}."""
  from hpjax.data.sources import open_source
  kw = {}
  if config.dataset == "synthetic":
    kw = {"seed": config.data_seed, "num_examples": config.num_train if split == "train" else None}
  elif config.dataset == "attribute_table":
    kw = {"seed": config.data_seed}  # the split of a table without a split column
  return open_source(config.dataset, split, path=config.data_path, image_size=config.image_size,
                     **kw)


def build_model(config: AttributesConfig, num_attributes: int, model: str | None = None
                ) -> nn.Module:
  from hpjax.hpnet.model import BaselineNet, HPNet
  if (model or config.model) == "baseline":
    return BaselineNet(num_attributes, tuple(config.features), tuple(config.dilations))
  dtype = None if config.head_matmul_dtype == "float32" else config.head_matmul_dtype
  return HPNet(num_attributes, tuple(config.features), tuple(config.dilations), config.stream_heads,
               dtype, config.head_stream_rows, config.mask_bias_init)


def make_loss_fn(config: AttributesConfig, image_shape: tuple[int, int, int],
                 num_attributes: int) -> training.LossFn:
  """The training loss of ``config``; the same function object for the same loss, so that
  :func:`hpjax.core.training.compiled_step` compiles it once per process."""
  mask_elements = image_shape[0] * image_shape[1] * num_attributes * config.features[-1]
  return _loss_fn(float(config.l1_lambda), config.l1_reduction, mask_elements)


@functools.lru_cache(maxsize=None)
def _loss_fn(l1_lambda: float, l1_reduction: str, mask_elements: int) -> training.LossFn:
  def loss_fn(logits, aux, batch):
    loss, parts = attribute_loss(logits, batch["label"], aux["mask_l1"],
                                 l1_lambda=l1_lambda, mask_elements=mask_elements,
                                 l1_reduction=l1_reduction)
    return loss, {**parts, "accuracy": jnp.mean(attribute_accuracy(logits, batch["label"]))}

  return loss_fn


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _correct_counts(apply_fn, variables, batch, n, beta, channel_mask):
  logits, _ = apply_fn(variables, training.images_to_float(batch["image"]), train=False, n=n,
                       beta=beta, channel_mask=channel_mask)
  correct = ((logits > 0) == (batch["label"] > 0)) & batch["valid"][:, None]
  return jnp.sum(correct, axis=0), jnp.sum(batch["valid"])


def evaluate_accuracy(apply_fn, variables, source, *, batch_size: int, limit: int | None = None,
                      n: float = 1.0, beta: float = 0.0, channel_mask: Any = None,
                      mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
  """Per-attribute accuracy ``[K]`` over (the first ``limit`` examples of) ``source``."""
  mesh = mesh or distributed.make_mesh()
  correct, total = 0, 0
  c = None if channel_mask is None else jnp.asarray(channel_mask, jnp.float32)
  for batch in pipeline.eval_batches(source, global_batch_size=batch_size,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count(), limit=limit):
    batch = distributed.global_batch(batch, mesh)
    with jax.set_mesh(mesh):  # the heads run per device (hpjax.hpnet.heads.streamed_heads)
      k, t = _correct_counts(apply_fn, variables, batch, jnp.float32(n), jnp.float32(beta), c)
    correct, total = correct + np.asarray(k), total + int(t)
  return np.asarray(correct, np.float64) / max(total, 1)


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _logits(apply_fn, variables, images):
  return apply_fn(variables, training.images_to_float(images), train=False)[0]


def predict(apply_fn, variables, source, *, batch_size: int, limit: int | None = None,
            mesh: jax.sharding.Mesh | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``(logits [N, K], labels [N, K])`` of (the first ``limit`` examples of) ``source``,
  on every process (each computes its slice of each batch; the slices are gathered)."""
  from jax.experimental import multihost_utils
  mesh = mesh or distributed.make_mesh()
  logits, labels = [], []
  for batch in pipeline.eval_batches(source, global_batch_size=batch_size,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count(), limit=limit):
    batch = distributed.global_batch(batch, mesh)
    with jax.set_mesh(mesh):
      out = {"logits": _logits(apply_fn, variables, batch["image"]), "label": batch["label"],
             "valid": batch["valid"]}
    out = (multihost_utils.process_allgather(out, tiled=True) if jax.process_count() > 1
           else jax.tree.map(np.asarray, out))
    logits.append(out["logits"][out["valid"]])
    labels.append(out["label"][out["valid"]])
  return np.concatenate(logits), np.concatenate(labels)


def warn_dead(metrics: dict[str, np.ndarray], names, where: str) -> None:
  """Prints one warning line naming the attributes whose head is dead (process 0)."""
  dead = classification_metrics.dead_attributes(metrics, names)
  if dead and jax.process_index() == 0:
    print(f"warning: {where}: {len(dead)} of {len(names)} heads are dead (constant "
          f"predictions or balanced accuracy < {classification_metrics.DEAD_BALANCED_ACCURACY}): "
          f"{', '.join(dead)}", flush=True)


def train(config: AttributesConfig, workdir: str, *, progress: bool = True
          ) -> training.TrainState:
  """Trains ``config.model`` on ``config.dataset`` in ``workdir`` (resuming if possible).

  Each evaluation records validation accuracy and balanced accuracy per attribute and
  prints a warning naming any dead head (:mod:`hpjax.core.classification_metrics`).
  """
  train_src = open_split(config, "train")
  val_src = open_split(config, "val")
  names = train_src.label_names
  k = len(names)
  model = build_model(config, k)
  tx = training.make_optimizer(config.learning_rate, config.warmup_steps, config.num_steps)
  state = training.create_train_state(model, tx, train_src.image_shape, config.seed)
  mesh = distributed.make_mesh()

  def evaluate(s: training.TrainState) -> dict[str, Any]:
    logits, labels = predict(s.apply_fn, s.variables, val_src, batch_size=config.batch_size,
                             limit=config.num_eval, mesh=mesh)
    m = classification_metrics.binary_metrics(logits, labels)
    warn_dead(m, names, f"step {int(s.step)} ({config.model}, validation)")
    return {"val_mean_accuracy": float(m["accuracy"].mean()),
            "val_mean_balanced_accuracy": float(m["balanced_accuracy"].mean()),
            "val_dead_heads": int(m["dead"].sum()),
            **{f"val_accuracy/{n}": float(a) for n, a in zip(names, m["accuracy"])},
            **{f"val_balanced_accuracy/{n}": float(a)
               for n, a in zip(names, m["balanced_accuracy"])}}

  return training.fit(workdir, config=config, state=state,
                      loss_fn=make_loss_fn(config, train_src.image_shape, k),
                      train_source=train_src, evaluate=evaluate, mesh=mesh, progress=progress)


def load(workdir: str, *, step: int | None = None
         ) -> tuple[AttributesConfig, training.TrainState, Any]:
  """Restores a trained run: ``(config, state, label_names)`` of checkpoint ``step``.

  By default the newest checkpoint that restores: a damaged one is skipped with a
  warning line naming its step and what failed (:func:`hpjax.core.training.restore_newest`).

  Raises:
    CheckpointError: no checkpoint restores (one line).
  """
  repl = distributed.replicated(distributed.make_mesh())

  def restore(s: int) -> tuple[AttributesConfig, training.TrainState, Any]:
    config = training.config_from_checkpoint(AttributesConfig, workdir, s)
    src = open_split(config, "test")
    model = build_model(config, len(src.label_names))
    tx = training.make_optimizer(config.learning_rate, config.warmup_steps, config.num_steps)
    # Shapes only (no initialisation compiled or run): the checkpoint fills in the values.
    state = jax.eval_shape(lambda: training.create_train_state(model, tx, src.image_shape,
                                                               config.seed))
    return config, training.restore_state(workdir, state, repl, s), src.label_names

  return training.restore_newest(workdir, restore, step=step)[1]


def markdown_table(per_attribute: dict[str, dict[str, Any]], summary: dict[str, Any]) -> str:
  """The evaluation table: every accuracy beside the trivial majority-class rate."""
  lines = ["| attribute | prevalence | majority rate | accuracy | balanced accuracy | AUROC | head |",
           "|---|---:|---:|---:|---:|---:|---|"]

  def pct(v):
    return "–" if v is None else f"{100 * v:.2f}"

  for name, m in per_attribute.items():
    auc = "–" if m["auroc"] is None else f"{m['auroc']:.3f}"
    lines.append(f"| {name} | {pct(m['prevalence'])} | {pct(m['majority_rate'])} | "
                 f"{pct(m['accuracy'])} | {pct(m['balanced_accuracy'])} | {auc} | "
                 f"{'**DEAD**' if m['dead'] else 'ok'} |")
  lines.append(f"| **mean** | | **{pct(summary['mean_majority_rate'])}** | "
               f"**{pct(summary['mean_accuracy'])}** | "
               f"**{pct(summary['mean_balanced_accuracy'])}** | "
               f"**{summary['mean_auroc']:.3f}** | {len(summary['dead_heads'])} dead |")
  return "\n".join(lines) + "\n"


def evaluate(workdir: str, *, split: str = "test") -> dict[str, Any]:
  """Evaluates the latest checkpoint on ``split``; writes ``eval/attributes.{json,md}``.

  Per attribute: accuracy, prevalence, majority rate, balanced accuracy, AUROC and the
  dead-head flag (:func:`hpjax.core.classification_metrics.binary_metrics`); dead heads are
  also listed under ``dead_heads`` and named in a printed warning.
  """
  config, state, names = load(workdir)
  src = open_split(config, split)
  logits, labels = predict(state.apply_fn, state.variables, src, batch_size=config.batch_size,
                           limit=config.num_eval)
  m = classification_metrics.binary_metrics(logits, labels)
  warn_dead(m, names, f"{workdir} ({config.model}, {split} split)")
  per = classification_metrics.per_attribute(m, names)
  result = {"split": split, "step": int(state.step), "num_examples": int(labels.shape[0]),
            "model": config.model,
            "mean_accuracy": float(m["accuracy"].mean()),
            "mean_majority_rate": float(m["majority_rate"].mean()),
            "mean_balanced_accuracy": float(m["balanced_accuracy"].mean()),
            "mean_auroc": float(np.nanmean(m["auroc"])),
            "dead_heads": classification_metrics.dead_attributes(m, names),
            "per_attribute": {n: float(a) for n, a in zip(names, m["accuracy"])},
            "attributes": per}
  if jax.process_index() == 0:
    io.write_text(os.path.join(workdir, "eval", "attributes.json"), json.dumps(result, indent=2))
    io.write_text(os.path.join(workdir, "eval", "attributes.md"), markdown_table(per, result))
  return result
