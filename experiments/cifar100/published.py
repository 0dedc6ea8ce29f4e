"""Published CIFAR-100 top-1 accuracies (%) of the teacher → student benchmark, as data, each with its source.

Every number was read from the source named in its row (the repositories' README tables; the CRD paper's
Tables 1 and 2 are RepDistiller's README tables). A cell a source leaves empty or marks N/A is absent here;
nothing is filled in. The references report the best test accuracy over epochs (RepDistiller's
`train_student.py` saves and prints `best_acc`; mdistiller's `best_acc`); kd_jax's tables report the
last epoch's, so expect them a little lower.

`PUBLISHED[(method, pair)] = (top1, source key)`, `TEACHERS[teacher model] = (top1, source key)`, `SOURCES[key]` the
citation. Methods are the file names of experiments/cifar100/ (`ce` is the student trained alone);
pairs are the keys of experiments/cifar100_pairs.py.
"""

from typing import Dict, Optional, Sequence, Tuple

SOURCES: Dict[str, str] = {
    "repdistiller_t1": "HobbitLong/RepDistiller README.md, 'Benchmark Results on CIFAR-100', table 1 (same "
                       "architecture); = Tian, Krishnan, Isola, 'Contrastive Representation Distillation', ICLR "
                       "2020 (arXiv:1910.10699), Table 1",
    "repdistiller_t2": "HobbitLong/RepDistiller README.md, 'Benchmark Results on CIFAR-100', table 2 (different "
                       "architectures); = CRD paper (arXiv:1910.10699), Table 2",
    "mdistiller_dkd": "megvii-research/mdistiller README.md, 'Decoupled Knowledge Distillation', 'Main Benchmark "
                      "Results', CIFAR-100 tables; = Zhao et al., 'Decoupled Knowledge Distillation', CVPR 2022 "
                      "(arXiv:2203.08679), Tables 1-2. The README's last column is headed 'ResNet32x4 / MobileNet-V2' "
                      "but its KD entry (74.45) is the ShuffleNet-V2 pair's, and the logit-standardization README "
                      "lists the same DKD 77.07 under ResNet32x4 / SHN-V2: it is res32x4_shuv2 here",
    "mdistiller_dot": "megvii-research/mdistiller README.md, 'DOT: A Distillation-Oriented Trainer', 'Main "
                      "Benchmark Results', CIFAR-100 table; = Zhao et al., ICCV 2023",
    "lskd_t1": "sunshangquan/logit-standardization-KD README.md, 'Results and Logs', table 1 (identical "
               "structures); Sun et al., 'Logit Standardization in Knowledge Distillation', CVPR 2024 "
               "(arXiv:2403.01427)",
    "lskd_t2": "sunshangquan/logit-standardization-KD README.md, 'Results and Logs', table 2 (distinct structures)",
    "dist_readme": "hunto/DIST_KD README.md, 'CIFAR-100' table (mean ± std of several runs; the mean is kept); "
                   "Huang et al., 'Knowledge Distillation from A Stronger Teacher', NeurIPS 2022 (arXiv:2205.10536)",
    "reviewkd_nd": "ReviewKD paper's CIFAR-100 numbers (Chen et al., 'Distilling Knowledge via Knowledge Review', "
                   "CVPR 2021, arXiv:2104.09044) as quoted in WangYZ1608/Knowledge-Distillation-via-ND README.md, "
                   "table 1.1 (a secondary source: dvlab-research/ReviewKD's README gives no CIFAR-100 numbers)",
    "ttm_readme": "zkxufo/TTM README.md, 'Benchmark Results on CIFAR-100', table 1 (as quoted in "
                  "experiments/cifar100_ttm.py and cifar100_wttm.py); Zheng & Yang, ICLR 2024 (arXiv:2402.11148)",
}

_T1 = ("wrn40_2_wrn16_2", "wrn40_2_wrn40_1", "res56_res20", "res110_res20", "res110_res32", "res32x4_res8x4",
       "vgg13_vgg8")
_T2 = ("vgg13_mv2", "res50_mv2", "res50_vgg8", "res32x4_shuv1", "res32x4_shuv2", "wrn40_2_shuv1")
_DKD1 = ("res56_res20", "res110_res32", "res32x4_res8x4", "wrn40_2_wrn16_2", "wrn40_2_wrn40_1", "vgg13_vgg8")
_DKD2 = ("res32x4_shuv1", "wrn40_2_shuv1", "vgg13_mv2", "res50_mv2", "res32x4_shuv2")
_LS1 = ("res32x4_res8x4", "vgg13_vgg8", "wrn40_2_wrn40_1", "wrn40_2_wrn16_2", "res56_res20", "res110_res32",
        "res110_res20")
_LS2 = ("res32x4_shuv2", "res32x4_wrn16_2", "res32x4_wrn40_2", "wrn40_2_res8x4", "wrn40_2_mv2", "vgg13_mv2",
        "res50_mv2")
_ND = ("res56_res20", "wrn40_2_wrn40_1", "res32x4_res8x4", "res50_mv2", "res32x4_shuv1", "res32x4_shuv2")
_DIST = ("wrn40_2_wrn40_1", "res56_res20", "res32x4_res8x4", "res50_mv2", "res32x4_shuv1", "res32x4_shuv2")

# (method, source, pairs, values): one table row as printed in its source; None = not reported (N/A).
_TABLE_ROWS: Tuple[Tuple[str, str, Sequence[str], Sequence[Optional[float]]], ...] = (
    ("ce", "repdistiller_t1", _T1, (73.26, 71.98, 69.06, 69.06, 71.14, 72.50, 70.36)),
    ("kd", "repdistiller_t1", _T1, (74.92, 73.54, 70.66, 70.67, 73.08, 73.33, 72.98)),
    ("fitnet", "repdistiller_t1", _T1, (73.58, 72.24, 69.21, 68.99, 71.06, 73.50, 71.02)),
    ("at", "repdistiller_t1", _T1, (74.08, 72.77, 70.55, 70.22, 72.31, 73.44, 71.43)),
    ("sp", "repdistiller_t1", _T1, (73.83, 72.43, 69.67, 70.04, 72.69, 72.94, 72.68)),
    ("cc", "repdistiller_t1", _T1, (73.56, 72.21, 69.63, 69.48, 71.48, 72.97, 70.71)),
    ("vid", "repdistiller_t1", _T1, (74.11, 73.30, 70.38, 70.16, 72.61, 73.09, 71.23)),
    ("rkd", "repdistiller_t1", _T1, (73.35, 72.22, 69.61, 69.25, 71.82, 71.90, 71.48)),
    ("pkt", "repdistiller_t1", _T1, (74.54, 73.45, 70.34, 70.25, 72.61, 73.64, 72.88)),
    ("ab", "repdistiller_t1", _T1, (72.50, 72.38, 69.47, 69.53, 70.98, 73.17, 70.94)),
    ("ft", "repdistiller_t1", _T1, (73.25, 71.59, 69.84, 70.22, 72.37, 72.86, 70.58)),
    ("fsp", "repdistiller_t1", _T1, (72.91, None, 69.95, 70.11, 71.89, 72.62, 70.23)),
    ("nst", "repdistiller_t1", _T1, (73.68, 72.24, 69.60, 69.53, 71.96, 73.30, 71.53)),
    ("crd", "repdistiller_t1", _T1, (75.48, 74.14, 71.16, 71.46, 73.48, 75.51, 73.94)),
    ("ce", "repdistiller_t2", _T2, (64.60, 64.60, 70.36, 70.50, 71.82, 70.50)),
    ("kd", "repdistiller_t2", _T2, (67.37, 67.35, 73.81, 74.07, 74.45, 74.83)),
    ("fitnet", "repdistiller_t2", _T2, (64.14, 63.16, 70.69, 73.59, 73.54, 73.73)),
    ("at", "repdistiller_t2", _T2, (59.40, 58.58, 71.84, 71.73, 72.73, 73.32)),
    ("sp", "repdistiller_t2", _T2, (66.30, 68.08, 73.34, 73.48, 74.56, 74.52)),
    ("cc", "repdistiller_t2", _T2, (64.86, 65.43, 70.25, 71.14, 71.29, 71.38)),
    ("vid", "repdistiller_t2", _T2, (65.56, 67.57, 70.30, 73.38, 73.40, 73.61)),
    ("rkd", "repdistiller_t2", _T2, (64.52, 64.43, 71.50, 72.28, 73.21, 72.21)),
    ("pkt", "repdistiller_t2", _T2, (67.13, 66.52, 73.01, 74.10, 74.69, 73.89)),
    ("ab", "repdistiller_t2", _T2, (66.06, 67.20, 70.65, 73.55, 74.31, 73.34)),
    ("ft", "repdistiller_t2", _T2, (61.78, 60.99, 70.29, 71.75, 72.50, 72.03)),
    ("nst", "repdistiller_t2", _T2, (58.16, 64.96, 71.28, 74.12, 74.68, 74.89)),
    ("crd", "repdistiller_t2", _T2, (69.73, 69.11, 74.30, 75.11, 75.65, 76.05)),
    ("dkd", "mdistiller_dkd", _DKD1, (71.97, 74.11, 76.32, 76.23, 74.81, 74.68)),
    ("dkd", "mdistiller_dkd", _DKD2, (76.45, 76.70, 69.71, 70.35, 77.07)),
    ("dot", "mdistiller_dot", ("res32x4_res8x4", "vgg13_vgg8", "res32x4_shuv2"), (75.12, 73.77, 75.55)),
    ("ls_kd", "lskd_t1", _LS1, (76.62, 74.36, 74.37, 76.11, 71.43, 74.17, 71.48)),
    ("ctkd", "lskd_t1", _LS1, (73.39, 73.52, 73.93, 75.45, 71.19, 73.52, 70.99)),
    ("dkd_ls", "lskd_t1", _LS1, (77.01, 74.81, 74.89, 76.39, 72.32, 74.29, 71.85)),
    ("mlkd", "lskd_t1", _LS1, (77.08, 75.18, 75.35, 76.63, 72.19, 74.11, 71.89)),
    ("ls_kd", "lskd_t2", _LS2, (75.56, 75.26, 77.92, 77.11, 69.23, 68.61, 69.02)),
    ("ctkd", "lskd_t2", _LS2, (75.37, 74.57, 77.66, 74.61, 68.34, 68.50, 68.67)),
    ("dkd_ls", "lskd_t2", _LS2, (77.37, 76.19, 78.95, 76.75, 70.01, 69.98, 70.45)),
    ("mlkd", "lskd_t2", _LS2, (78.44, 76.52, 79.26, 77.33, 70.78, 70.57, 71.04)),
    ("dist", "dist_readme", _DIST, (74.43, 71.75, 76.31, 68.66, 76.34, 77.35)),
    ("review_kd", "reviewkd_nd", _ND, (71.89, 75.09, 75.63, 69.89, 77.45, 77.78)),
    ("ttm", "ttm_readme", ("res32x4_res8x4",), (76.17,)),
    ("wttm", "ttm_readme", ("res32x4_res8x4",), (76.06,)),
)

# Teachers by model (RepDistiller's README prints each above its columns, the same in every column).
TEACHERS: Dict[str, Tuple[float, str]] = {
    "wrn_40_2": (75.61, "repdistiller_t1"), "resnet56": (72.34, "repdistiller_t1"),
    "resnet110": (74.31, "repdistiller_t1"), "resnet32x4": (79.42, "repdistiller_t1"),
    "vgg13": (74.64, "repdistiller_t1"), "resnet50": (79.34, "repdistiller_t2"),
}


def _build() -> Dict[Tuple[str, str], Tuple[float, str]]:
  published: Dict[Tuple[str, str], Tuple[float, str]] = {}
  for method, source, pairs, values in _TABLE_ROWS:
    assert len(pairs) == len(values), (method, source)
    for pair, value in zip(pairs, values):
      # The first source listed for a cell wins (the method's own paper or benchmark comes first above).
      if value is not None and (method, pair) not in published:
        published[(method, pair)] = (value, source)
  return published


PUBLISHED = _build()


def published(method: str, pair: str) -> Optional[Tuple[float, str]]:
  """`(top1, source key)` of `method` on `pair`, or None where no source was found."""
  return PUBLISHED.get((method, pair))


def pairs_of(method: str) -> Tuple[str, ...]:
  """The pairs with a published number for `method`, in table order."""
  return tuple(p for m, p in PUBLISHED if m == method)


def pair_name(pair: str) -> str:
  """The pair key of `pair` (also accepted as `teacher-student` model names), via experiments/cifar100_pairs.py."""
  import os, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  experiments = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if experiments not in sys.path:
    sys.path.append(experiments)
  import cifar100_pairs  # pylint: disable=import-outside-toplevel
  return cifar100_pairs.pair_name(pair)
