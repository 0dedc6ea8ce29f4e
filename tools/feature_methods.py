"""Every feature and relation distiller on the embedded digits data, over several seeds, next to CE and KD.

Usage (the numbers in docs/methods.md come from this command):
  python tools/feature_methods.py --seeds 0 1 2 --workdir runs/feature_methods
Per seed it trains the teachers (the study's cnn_large; a second cnn_large on seed + 100 for FEED's two
teachers; a resnet20 for FSP, which needs equal stage widths and a stem), then each method's config from
experiments/ (FSP's student is resnet8, compared with resnet8 trained by CE alone).
Most methods train cnn_small (the maps they read need spatial stages); RKD and area-wise RKD read
embeddings and train the study's mlp_small. Each row is compared with the CE student of the same model.
Writes <workdir>/summary.md; `--quick` shrinks every run to a few steps (a smoke test, not a result);
`--methods NAME ...` re-runs only those rows and keeps the others from <workdir>/runs.json (teacher runs
already in the workdir are finished, so they are only re-evaluated).
"""

from __future__ import annotations

from logit_methods import _stats, run_table

CE = {"loss": {"ce": {"weight": 1.0}}}
METHODS = {
    "CE (cnn_small)": ("digits_at.py", CE),
    "CE (mlp_small)": ("digits_kd.py", CE),
    "CE (resnet8)": ("digits_fsp.py", {**CE, "phases": ()}),  # FSP's student alone
    "KD (cnn_small)": ("digits_kd.py", {"student.model": "cnn_small"}),
    "KD (mlp_small)": ("digits_kd.py", {}),
    "FitNet": ("digits_fitnet.py", {}),
    "AT": ("digits_at.py", {}),
    "SP": ("digits_sp.py", {}),
    "CC": ("digits_cc.py", {}),
    "PKT": ("digits_pkt.py", {}),
    "NST": ("digits_nst.py", {}),
    "FSP (resnet20 teacher)": ("digits_fsp.py", {"teacher.workdir": "@teacher_resnet20"}),
    "VID": ("digits_vid.py", {}),
    "RKD": ("digits_rkd.py", {}),
    "Area-wise RKD": ("digits_area_rkd.py", {}),
    "AB (init phase, then CE)": ("digits_ab.py", {}),
    "FT (paraphraser phase, then CE + 500·FT)": ("digits_ft.py", {}),
    "CRD": ("digits_crd.py", {}),
    "ReviewKD": ("digits_review_kd.py", {}),
    "FEED, parallel (2 teachers)": ("digits_feed.py", {"teacher.extra_workdirs": ("@teacher_b",)}),
}
TEACHERS = {"teacher": ("cnn_large", 0), "teacher_b": ("cnn_large", 100), "teacher_resnet20": ("resnet20", 0)}


def summarize(per_seed: dict) -> str:
  seeds = sorted(per_seed)
  first = per_seed[seeds[0]]
  ce = {student: _stats([per_seed[s][f"CE ({student})"]["test_accuracy"] for s in seeds])[0]
        for student in ("cnn_small", "mlp_small", "resnet8")}
  lines = [f"| method | student | loss | test acc, mean ± std ({len(seeds)} seeds) | vs CE | per-seed |",
           "|---|---|---|---:|---:|---|"]
  for name in TEACHERS:
    mean, std, a = _stats([per_seed[s][name]["test_accuracy"] for s in seeds])
    lines.append(f"| {name} | {first[name]['model']} | ce | {mean:.2f} ± {std:.2f} | | "
                 f"{', '.join(f'{x:.2f}' for x in a)} |")
  for method in METHODS:
    results = [per_seed[s][method]["test_accuracy"] for s in seeds]
    student, loss = first[method]["student"], first[method]["loss_text"]
    if any(r is None for r in results):
      failed = [str(s) for s, r in zip(seeds, results) if r is None]
      lines.append(f"| {method} | {student} | {loss} | diverged (non-finite loss) on seed(s) {', '.join(failed)} "
                   f"| | {', '.join('—' if r is None else f'{100 * r:.2f}' for r in results)} |")
      continue
    mean, std, a = _stats(results)
    lines.append(f"| {method} | {student} | {loss} | {mean:.2f} ± {std:.2f} | {mean - ce[student]:+.2f} | "
                 f"{', '.join(f'{x:.2f}' for x in a)} |")
  return "\n".join(lines)


def main() -> None:
  run_table(__doc__, "runs/feature_methods", METHODS, TEACHERS, summarize)


if __name__ == "__main__":
  main()
