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
  suites = {"hpnet": {"summary": {
      "hpnet/64x64x3_K40": {"train_ratio_jax_over_torch_eager": 3.0, "peak_rss_mb/jax": 3500.0,
                            "train_ratio_jax_over_torch_compile": 1.9},
      "baseline/64x64x3_K40": {"train_ratio_jax_over_torch_eager": 1.1}}},
      "pruning": {"rows": [{"kept_channels": 8, "flop_reduction": 1.0, "efficiency": 1.0},
                           {"kept_channels": 4, "flop_reduction": 2.0, "efficiency": 0.7},
                           {"kept_channels": 2, "flop_reduction": 4.0, "efficiency": 0.9}]},
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
  assert t["train_64_ratio_vs_torch_compile"] == {"value": 1.9, "goal": ">= 2.0", "met": False}
  assert t["baseline_train_64_ratio_vs_torch_eager"]["met"] is True
  # At C' = C/2 (4 of 8 channels), not the worst size.
  assert t["pruning_efficiency_at_half_channels"]["value"] == 0.7
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


# ---------------------------------------------------------------------------
# The GPU check script (benchmarks/gpu.py; issue 11, item 5).

def test_gpu_check_quick_run_writes_json_and_markdown(tmp_path, capsys):
  """The quick run on this CPU: the same code path as on a GPU, on tiny shapes."""
  import math

  from benchmarks import gpu

  # One variant over two batch sizes keeps it short; a generous budget so that a loaded
  # machine does not skip the second batch size.
  assert gpu.main(["--quick", "--variants", "streamed", "--batches", "2,4",
                   "--budget-s", "900", "--out", str(tmp_path)]) == 0
  names = sorted(p.name for p in tmp_path.iterdir())
  assert len(names) == 2 and names[0].endswith(".gpu_check.quick.json"), names
  assert names[1].endswith(".gpu_check.quick.md")
  r = json.loads((tmp_path / names[0]).read_text())
  assert r["quick"] is True and r["errors"] == [] and r["machine"]["machine"] in names[0]
  assert r["config"]["variants"] == {"streamed": {"stream_heads": True,
                                                  "head_matmul_dtype": None}}
  c = r["ceilings"]
  assert set(c["matmul_tflops"]) == {"bfloat16", "float32_default", "float32_highest"}
  assert all(v > 0 for v in c["matmul_tflops"].values()) and c["copy_gbps"] > 0
  assert c["peak_mb"] is None  # a CPU has no memory_stats()
  rows = r["hpnet"]
  assert [(x["variant"], x["batch"], x["status"]) for x in rows] == [
      ("streamed", 2, "ok"), ("streamed", 4, "ok")], rows
  for x in rows:
    assert x["images_per_s"] > 0 and x["first_step_s"] >= x["compile_s"] > 0
    assert x["train_tflops"] > 0 and 0 < x["fraction_of_bf16_ceiling"] < math.inf
    assert math.isfinite(x["loss_first"]) and math.isfinite(x["loss_last"])
    assert x["peak_mb"] is None and x["xla_memory"]["total_mb"] > 0
    assert x["while_trip_counts"] and min(x["while_trip_counts"]) >= 1  # the streamed heads' scan
  # 3 × forward FLOPs at the reported rate.
  assert rows[0]["train_tflops"] == pytest.approx(
      3 * rows[0]["forward_gflops_per_image"] * rows[0]["images_per_s"] / 1e3, rel=1e-3)
  prof = rows[0]["profile"]
  assert "error" not in prof, prof
  assert prof["steps"] == 2 and prof["kernels_per_step"] >= 10
  assert prof["kernels_per_step"] == prof["hlo_ops_per_step"] and "XLA:CPU" in prof["counted_as"]
  assert "profile" not in rows[1]  # only the smallest batch is profiled
  s = r["image_score"]
  assert s["status"] == "ok" and s["tap_bytes_per_image"] > 0
  assert all(v > 0 for v in s["images_per_s"].values())
  assert 0 < s["score_only_fraction_of_copy"] and 0 < s["fused_fraction_of_copy"]
  md = (tmp_path / names[1]).read_text()
  for heading in ("## Ceilings", "## HPNet train step (16x16x3, K=4", "Kernels per step",
                  "## Image score"):
    assert heading in md, heading
  assert "[gpu-check" in capsys.readouterr().err  # progress lines as it goes


def test_gpu_check_counts_kernels_from_device_streams():
  """A GPU-shaped trace: stream kernels and copies, the XLA Ops line, launch calls."""
  from benchmarks import gpu

  hlo = ("ENTRY %main {\n  %fusion.1 = f32[4]{0} fusion(%p), kind=kLoop\n"
         "  ROOT %while.2 = (s32[], f32[4]{0}) while(%t), condition=%c, body=%b\n}\n")
  ops = gpu.hlo_opcodes(hlo)
  assert ops == {"fusion.1": "fusion", "while.2": "while"}
  planes = [("/device:GPU:0", "Stream #13(Kernel,MemcpyD2H)",
             ["loop_add_fusion", "sm90_xmma_gemm", "MemcpyD2H", "loop_add_fusion"]),
            ("/device:GPU:0", "Stream #14(Memset)", ["Memset"]),
            ("/device:GPU:0", "XLA Ops", ["fusion.1", "fusion.1", "custom-call.3"]),
            ("/device:GPU:0", "CUPTI overhead", ["x"]),
            ("/host:CUPTI", "Host Threads/1", ["cuLaunchKernel", "cuLaunchKernelEx",
                                               "cuGraphLaunch (CudaGraph:3)", "cuMemAlloc"]),
            ("/host:CPU", "python", ["fusion.1", "PjitFunction(step)"])]
  got = gpu.trace_counts(planes, ops, steps=2, accelerator=True)
  assert got["kernels_per_step"] == 1.5 and got["copies_per_step"] == 1.0
  assert got["hlo_ops_per_step"] == 1.5 and got["host_launches_per_step"] == 1.5
  assert "GPU streams" in got["counted_as"]
  # No stream lines (a CPU): XLA:CPU's thunks, the while itself left out.
  cpu = gpu.trace_counts([("/host:CPU", "tf_XLAPjRtCpuClient/1",
                           ["while.2", "fusion.1", "end: fusion.1", "fusion.1"])], ops, steps=1,
                         accelerator=False)
  assert cpu["kernels_per_step"] == 2.0 and cpu["host_launches_per_step"] is None
  # A GPU trace without CUPTI's streams: unknown, not the host's thunks.
  blind = gpu.trace_counts(planes[-1:], ops, steps=1, accelerator=True)
  assert blind["kernels_per_step"] is None and "no device stream" in blind["counted_as"]


def test_gpu_check_sweep_records_oom_and_budget(monkeypatch):
  """Out of memory skips the variant's larger batches; a batch size that would overrun
  the variant's share of the budget is skipped, and so are the larger ones."""
  import time

  from benchmarks import gpu

  calls = []

  def fake(plan, variant, batch, profile):
    calls.append((batch, profile))
    if batch == 128:
      return {"variant": variant, "batch": batch, "status": "oom", "error": "RESOURCE_EXHAUSTED"}
    return {"variant": variant, "batch": batch, "status": "ok", "images_per_s": 1.0,
            "compile_s": 10.0, "first_step_s": 11.0, "steps": 2, "step_s_median": 0.5,
            "peak_mb": 1.0}

  monkeypatch.setattr(gpu, "train_config", fake)
  rows = []
  gpu.sweep(gpu.QUICK, "materialised", [64, 128, 256], time.time() + 600,
            lambda kind, data: rows.append(data))
  assert calls == [(64, True), (128, False)]
  assert [x["status"] for x in rows] == ["ok", "oom", "skipped"]
  assert rows[2]["reason"] == "out of memory at batch 128"
  # Compilation again (1.2 x 10 s) and twice the steps (2.2 x (1 + 2 x 0.5) s).
  assert gpu.next_estimate(rows[0], 30.0) == pytest.approx(16.4)
  assert gpu.next_estimate(rows[1], 30.0) == pytest.approx(45.0)
  rows.clear()
  calls.clear()
  # 10 s left: batch 64 runs (nothing is known yet), 256 would need 16.4 s.
  gpu.sweep(gpu.QUICK, "streamed", [64, 256, 512], time.time() + 10, lambda k, d: rows.append(d))
  assert calls == [(64, True)]
  assert [(x["status"], x.get("reason")) for x in rows] == [
      ("ok", None), ("skipped", "time budget"), ("skipped", "time budget")]
  assert gpu._failure(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                   "allocate 9.0GiB\nmore"))[0] == "oom"
  assert gpu._failure(ValueError("bad")) == ("error", "ValueError: bad")
  assert gpu.parse_messages('noise\n@gpu-check {"kind": "hpnet", "data": {"batch": 2}}\n') == [
      ("hpnet", {"batch": 2})]


@pytest.mark.parametrize("args,line", [
    (["--batches", "64,x"], "error: python -m benchmarks.gpu: --batches expects comma-separated "
                            "positive integers, e.g. 64,128; got '64,x'"),
    (["--variants", "streamed,fast"], "error: python -m benchmarks.gpu: --variants expects a "
     "comma-separated subset of materialised,materialised_bf16,streamed,streamed_bf16; "
     "got 'streamed,fast'"),
    (["--budget-s", "0"], "error: python -m benchmarks.gpu: --budget-s expects a positive "
                          "number of seconds; got '0'"),
    # The full plan on a CPU is refused before any measurement.
    (["--in-process"], "error: python -m benchmarks.gpu: JAX's default device is a CPU; the "
                       "full check is sized for a large GPU (run it with --quick on a CPU)"),
])
def test_gpu_check_bad_arguments_are_one_line(args, line, tmp_path, capsys):
  from benchmarks import gpu

  assert gpu.main([*args, "--out", str(tmp_path)]) == 2
  err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("[gpu-check")]
  assert err == [line]
  assert list(tmp_path.iterdir()) == []  # nothing written
