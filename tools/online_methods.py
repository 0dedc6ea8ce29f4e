"""Online distillation on the embedded digits data, over several seeds, next to CE and offline KD.

Usage (the numbers in docs/methods.md come from this command):
  python tools/online_methods.py --seeds 0 1 2 --workdir runs/online_methods
Per seed it trains the study's cnn_large teacher, then cnn_small with CE alone, with KD from that teacher,
and together with peers from scratch: DML (experiments/digits_dml.py; its sequential updates, and for K = 2
also simultaneous ones) and AFD (experiments/digits_afd.py) with K = 2 (a cnn_large peer) and K = 3
(cnn_large and cnn_small peers). Every network of an online run gets a row. Writes <workdir>/summary.md; `--quick` shrinks every run to a few steps (a smoke test, not a
result); `--methods NAME ...` re-runs only those rows.
"""

from __future__ import annotations

from logit_methods import _stats, run_table

ONLINE = {"teacher.workdir": ""}  # trained from scratch: no frozen teacher
THREE = ("cnn_large", "cnn_small")
METHODS = {
    "CE": ("digits_kd.py", {"student.model": "cnn_small", "loss": {"ce": {"weight": 1.0}}}),
    "KD (cnn_large teacher)": ("digits_kd.py", {"student.model": "cnn_small"}),
    "DML, K = 2": ("digits_dml.py", ONLINE),
    "DML, K = 3": ("digits_dml.py", {**ONLINE, "peers": THREE}),
    "DML, K = 2, simultaneous updates": ("digits_dml.py", {**ONLINE, "mutual_update": "simultaneous"}),
    "AFD, K = 2": ("digits_afd.py", ONLINE),
    "AFD, K = 3": ("digits_afd.py", {**ONLINE, "peers": THREE}),
}
TEACHERS = {"teacher": ("cnn_large", 0)}


def _accuracies(per_seed: dict, seeds, method: str, network: int):
  runs = [per_seed[s][method] for s in seeds]
  if any(r.get("test_accuracy") is None for r in runs):
    return None
  return [r["networks"][network]["test"]["accuracy"] if "networks" in r else r["test_accuracy"] for r in runs]


def summarize(per_seed: dict) -> str:
  seeds = sorted(per_seed)
  first = per_seed[seeds[0]]
  ce = _stats([per_seed[s]["CE"]["test_accuracy"] for s in seeds])[0]
  lines = [f"| method | network | model | loss | test acc, mean ± std ({len(seeds)} seeds) | vs CE (cnn_small) | "
           "per-seed |", "|---|---|---|---|---:|---:|---|"]
  mean, std, a = _stats([per_seed[s]["teacher"]["test_accuracy"] for s in seeds])
  lines.append(f"| teacher | | {first['teacher']['model']} | ce | {mean:.2f} ± {std:.2f} | | "
               f"{', '.join(f'{x:.2f}' for x in a)} |")
  for method in METHODS:
    networks = first[method].get("networks") or [{"network": "student", "model": first[method]["student"]}]
    for k, network in enumerate(networks):
      results = _accuracies(per_seed, seeds, method, k)
      label = method if k == 0 else ""
      if results is None:
        lines.append(f"| {label} | {network['network']} | {network['model']} | {first[method]['loss_text']} | "
                     "did not finish (see runs.json) | | |")
        continue
      mean, std, a = _stats(results)
      versus = f"{mean - ce:+.2f}" if network["model"] == "cnn_small" else ""
      lines.append(f"| {label} | {network['network']} | {network['model']} | {first[method]['loss_text']} | "
                   f"{mean:.2f} ± {std:.2f} | {versus} | {', '.join(f'{x:.2f}' for x in a)} |")
  return "\n".join(lines)


def main() -> None:
  run_table(__doc__, "runs/online_methods", METHODS, TEACHERS, summarize)


if __name__ == "__main__":
  main()
