"""Tables over several runs: ablation lines and claims over seeds, from hand-made JSON."""
import json
import os

import numpy as np
import pytest

from evaluate import runs as runs_cli
from hpjax.hpnet import summary
from hpjax.core.errors import DataError


def _eval(workdir, model, accs, dead=()):
  names = [f"A{i}" for i in range(len(accs))]
  attrs = {n: {"accuracy": a, "prevalence": 0.2, "majority_rate": 0.8, "balanced_accuracy": a,
               "auroc": 0.9, "constant": False, "dead": n in dead} for n, a in zip(names, accs)}
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  with open(os.path.join(workdir, "eval", "attributes.json"), "w") as f:
    json.dump({"model": model, "step": 10, "mean_accuracy": float(np.mean(accs)),
               "mean_majority_rate": 0.8, "mean_balanced_accuracy": float(np.mean(accs)),
               "mean_auroc": 0.9, "dead_heads": list(dead), "attributes": attrs,
               "per_attribute": dict(zip(names, accs))}, f)


def _analyses(workdir, gap, ratio):
  out = os.path.join(workdir, "analysis")
  os.makedirs(out, exist_ok=True)
  docs = {
      "pruning": {"models": {"hpnet": {"semantic_minus_random": gap, "random_std_mean": 0.01,
                                       "l1_minus_random": 0.0},
                             "baseline": {"semantic_minus_random": 0.0}}},
      "robustness": {"val_selection_summary": {"oracle_gain_mean": 0.02,
                                               "selected_gain_mean": 0.01,
                                               "levels_selected_beats_identity": 3}},
      "attention": {"localisation_mean": {"hpnet_attention": {"present": {"ratio": ratio}}},
                    "table4": {"Heavy_Makeup": [["Wearing_Lipstick", 0.9], ["Bangs", 0.1]],
                               "Black_Hair": [["Blond_Hair", 0.5]],
                               "Blond_Hair": [["Bangs", 0.2]]}},
      "predictability": {"models": {"hpnet": {"prune_accuracy": {"spearman_accuracy": 0.5}}}},
  }
  for name, doc in docs.items():
    with open(os.path.join(out, f"{name}.json"), "w") as f:
      json.dump(doc, f)


def test_table_flags_worst_attribute_and_dead_heads(tmp_path):
  _eval(tmp_path / "a", "hpnet", [0.9, 0.5, 0.7], dead=("A1",))
  text = summary.table([str(tmp_path / "a")], per_attribute=True)
  assert "| 50.0 (A1) |" in text and "1 (A1)" in text and "| 80.00 |" in text
  assert text.splitlines()[2].endswith("| 90.0 | 50.0 | 70.0 |")


def test_seeds_table_mean_std_and_per_seed_values(tmp_path):
  dirs = []
  for s, (gap, ratio) in enumerate([(0.01, 1.5), (0.03, 2.5), (0.02, 2.0)]):
    d = tmp_path / f"s{s}"
    _eval(d, "hpnet", [0.9, 0.8])
    _eval(d / "baseline", "baseline", [0.9, 0.9])
    _analyses(d, gap, ratio)
    dirs.append(str(d))
  text = summary.seeds_table(dirs)
  # Gap in points: 1, 3, 2 → mean 2, sample std 1.
  assert "| pruning | HPNet semantic − random % | 2.00 ± 1.00 | 1.00, 3.00, 2.00 |" in text
  assert "| localisation | HPNet attention ratio (present) | 2.000 ± 0.500 |" in text
  # Table 4: Wearing_Lipstick found (1/1), Blond in Black's list (1), Black not in Blond's (0).
  assert "| table4 | Table 4 checks met | 2.000 ± 0.000 |" in text
  assert "| accuracy | HPNet mean accuracy % | 85.00 ± 0.00 |" in text
  # Missing numbers print as "–", not as zeros.
  assert "| pruning | baseline random spread (std) % | – | –, –, – |" in text


def test_missing_eval_is_one_line_error(tmp_path, capsys):
  with pytest.raises(DataError, match="eval/attributes.json: not found"):
    summary.read_eval(str(tmp_path))
  assert runs_cli.main([str(tmp_path)]) == 2
  assert capsys.readouterr().err.count("\n") == 1


def test_old_eval_format_is_one_line_error(tmp_path):
  os.makedirs(tmp_path / "eval")
  (tmp_path / "eval" / "attributes.json").write_text('{"mean_accuracy": 0.8}')
  with pytest.raises(DataError, match="re-run python -m evaluate.attributes"):
    summary.read_eval(str(tmp_path))
