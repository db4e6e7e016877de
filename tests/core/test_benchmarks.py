"""The benchmark harness's quick mode, its FLOP count and targets, and the PyTorch twin."""
import json

import jax
import numpy as np
import pytest

from benchmarks import harness
from benchmarks.hpnet import Shape, forward_flops
from hpjax.hpnet.model import BaselineNet, HPNet


def test_forward_flops_by_hand():
  s = Shape(2, 1, 2, batch=1, features=(3, 4), dilations=(1, 1))
  # convs 2·9·1·3·4 + 2·9·3·4·4 (4 positions each), heads 2·4·K·C² = 2·4·2·16.
  assert forward_flops(s) == 216 + 864 + 256
  assert forward_flops(s, "baseline") == 216 + 864
  assert forward_flops(s, features=(3, 2)) == 216 + 432 + 2 * 4 * 2 * 4


def test_targets_and_slug():
  suites = {"hpnet": {"summary": {"hpnet/64x64x3_K40": {
      "train_ratio_jax_over_torch_eager": 3.0, "peak_rss_mb/jax": 3500.0}}},
      "pruning": {"rows": [{"flop_reduction": 1.0, "efficiency": 1.0},
                           {"flop_reduction": 2.0, "efficiency": 0.7},
                           {"flop_reduction": 4.0, "efficiency": 0.9}]},
      "image_score": {"stored_fraction_of_copy": 0.6, "fused_vs_plain_forward": {
          "a": {"two_programs_over_plain_wall": 1.1, "one_program_over_plain_wall": 1.3},
          "b": {"two_programs_over_plain_wall": 1.5, "one_program_over_plain_wall": 1.25}}}}
  t = harness.check_targets({"hpnet/64x64x3_K40/train_fraction_of_matmul_ceiling": 0.2}, suites)
  assert t["train_64_ratio_vs_torch_eager"]["met"] is True
  assert t["train_64_fraction_of_matmul_ceiling"] == {"value": 0.2, "goal": ">= 0.35",
                                                       "met": False}
  assert t["train_64_peak_rss_mb"]["met"] is False
  assert t["pruning_efficiency"]["value"] == 0.7 and t["pruning_efficiency"]["met"] is False
  assert t["image_score_stored_fraction_of_copy"]["met"] is True
  # The worse model's better variant: b's one-program 1.25 > 1.2.
  assert t["image_score_fused_over_forward"] == {"value": 1.25, "goal": "<= 1.2", "met": False}
  assert harness.check_targets({}, {})["pruning_efficiency"]["met"] is None
  assert harness.slug("Intel(R) Xeon(R) Processor @ 2.1GHz") == "intel-xeon-processor-2-1ghz"


def test_derived_fractions_use_the_matching_ceiling():
  suites = {"ceilings": {"matmul_ceiling_gflops": 100.0, "matmul_bf16_gflops": 400.0},
            "hpnet": {"runs": [{"matmul_gflops_after": 120.0}],
                      "summary": {"hpnet/s": {"jax_train_gflops": 60.0},
                                  "hpnet_bf16/s": {"jax_train_gflops": 200.0}}}}
  d = harness.derived(suites)
  # float32 rows against the best float32 rate seen (the worker's 120), bf16 against 400.
  assert d["matmul_ceiling_gflops"] == 120.0
  assert d["hpnet/s/train_fraction_of_matmul_ceiling"] == 0.5
  assert d["hpnet_bf16/s/train_fraction_of_matmul_ceiling"] == 0.5


def test_quick_run_writes_valid_results(tmp_path, capsys):
  from benchmarks.__main__ import main

  assert main(["--quick", "--suites", "ceilings,hpnet,pruning", "--out", str(tmp_path)]) == 0
  files = sorted(p.name for p in tmp_path.iterdir())
  assert len(files) == 2 and files[0].endswith(".quick.json") and files[1].endswith(".quick.md")
  r = json.loads((tmp_path / files[0]).read_text())
  m = r["machine"]
  assert r["quick"] is True and m["machine"] in files[0]
  assert m["versions"]["jax"] == jax.__version__ and m["threads"] >= 1 and m["cpu_model"]
  c = r["suites"]["ceilings"]
  assert c["matmul_ceiling_gflops"] > 0 and c["copy_ceiling_gbps"] > 0
  h = r["suites"]["hpnet"]
  assert not [x for x in h["runs"] if "error" in x], h["runs"]
  row = h["summary"]["hpnet/12x12x1_K3"]
  assert row["train_images_per_s/jax"] > 0 and row["inference_images_per_s/jax"] > 0
  assert row["peak_rss_mb/jax"] > 0 and row["jax_train_gflops"] > 0
  jax_run = next(x for x in h["runs"] if x["framework"] == "jax")
  assert jax_run["train"]["xla_memory"]["total_mb"] > 0
  assert np.isfinite(jax_run["train"]["loss_last"])
  assert r["derived"]["hpnet/12x12x1_K3/train_fraction_of_matmul_ceiling"] > 0
  rows = r["suites"]["pruning"]["rows"]
  assert [x["kept_channels"] for x in rows] == [8, 4] and rows[1]["flop_reduction"] > 1
  assert set(r["targets"]) == set(harness.TARGETS)
  md = (tmp_path / files[1]).read_text()
  assert "## HPNet: JAX vs PyTorch" in md and "## Ceilings" in md


@pytest.mark.parametrize("model", ["hpnet", "baseline"])
@pytest.mark.parametrize("stream_heads", [False, True])
def test_torch_twin_equals_jax_logits(model, stream_heads):
  torch = pytest.importorskip("torch")
  from benchmarks import torch_hpnet

  if model == "baseline" and stream_heads:
    pytest.skip("the baseline has no heads")
  x = np.random.default_rng(0).uniform(size=(3, 9, 9, 2)).astype(np.float32)
  if model == "hpnet":
    jm, tm = HPNet(5, (4, 6), (1, 2), stream_heads), torch_hpnet.TorchHPNet(2, 5, (4, 6), (1, 2))
  else:
    jm, tm = BaselineNet(5, (4, 6), (1, 2)), torch_hpnet.TorchBaselineNet(2, 5, (4, 6), (1, 2))
  v = jm.init(jax.random.key(0), x)
  # Non-trivial running statistics, so eval mode checks they are copied.
  stats = jax.tree.map(lambda a: a + 0.3 * np.linspace(0.1, 1.0, a.size).reshape(a.shape),
                       v["batch_stats"])
  v = {"params": v["params"], "batch_stats": stats}
  torch_hpnet.load_jax_variables(tm, v)
  tm.eval()
  logits, aux = jm.apply(v, x)
  with torch.no_grad():
    t_logits, t_l1 = tm(torch.from_numpy(x))
  np.testing.assert_allclose(t_logits.numpy(), logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(t_l1.numpy(), aux["mask_l1"], rtol=1e-5)
  tm.train()  # batch statistics
  (logits, _), _ = jm.apply(v, x, train=True, mutable=["batch_stats"])
  with torch.no_grad():
    t_logits, _ = tm(torch.from_numpy(x))
  np.testing.assert_allclose(t_logits.numpy(), logits, rtol=1e-5, atol=1e-5)
  assert float(np.abs(logits).max()) > 1e-3  # not trivially zero


@pytest.mark.parametrize("shape,rows", [((3, 8, 8, 4), 24), ((5, 3, 3, 4), 32), ((2, 7, 7, 4), 16)])
def test_streamed_heads_equal_reference_with_traced_transform(shape, rows):
  """The heads' custom VJP (benchmarks' hot path, hpjax.hpnet.heads.streamed_heads):
  values and gradients, the transform's (n, β) included, against plain autodiff."""
  from hpjax.hpnet.heads import head_logits, streamed_heads

  k = 3
  keys = jax.random.split(jax.random.key(0), 5)
  f = jax.random.normal(keys[0], shape)
  c = shape[-1]
  params = {"mask_kernel": jax.random.normal(keys[1], (k, c, c)),
            "mask_bias": jax.random.normal(keys[2], (k, c)),
            "kernel": jax.random.normal(keys[3], (k, c)), "bias": jax.random.normal(keys[4], (k,))}

  def loss(p, f, nb, heads):
    logits, l1 = heads(p, f, nb[0], nb[1])
    return jax.numpy.sum(jax.numpy.sin(logits)) + 1e-2 * jax.numpy.sum(jax.numpy.cos(l1 / 100))

  nb = jax.numpy.array([3.0, 0.2])
  grad = jax.grad(loss, argnums=(0, 1, 2))
  want = grad(params, f, nb, lambda *a: head_logits(*a)[:2])
  got = grad(params, f, nb, lambda *a: streamed_heads(*a, rows=rows))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5), got, want)
  assert float(jax.numpy.abs(got[2]).max()) > 0  # d/d(n, β) really flows
  np.testing.assert_allclose(streamed_heads(params, f, 1.0, 0.0, rows=rows)[0],
                             head_logits(params, f, 1.0, 0.0)[0], rtol=1e-5, atol=1e-5)
