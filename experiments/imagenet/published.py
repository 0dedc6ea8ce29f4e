"""Published ImageNet top-1 accuracies (%) of ResNet-34 → ResNet-18 and ResNet-50 → MobileNetV1, with sources.

Read from the sources named per row; AT has ImageNet numbers in the DKD and ReviewKD papers but no README that
could be read here lists them, so AT has none below (not invented). `PUBLISHED[(method, pair)] = (top1,
source)`, `TEACHERS[model]`, `SOURCES[key]`.
"""

from typing import Dict, Optional, Tuple

SOURCES: Dict[str, str] = {
    "mdistiller_dkd": "megvii-research/mdistiller README.md, 'Decoupled Knowledge Distillation', ImageNet table "
                      "(DKD paper, arXiv:2203.08679)",
    "reviewkd_readme": "dvlab-research/ReviewKD ImageNet/README.md, 'Results' (arXiv:2104.09044)",
    "dist_readme": "hunto/DIST_KD README.md, ImageNet 'Baseline settings' table (arXiv:2205.10536)",
    "crd_nd": "CRD's ImageNet numbers as quoted in WangYZ1608/Knowledge-Distillation-via-ND README.md, table 1.2 "
              "(a secondary source)",
}

PUBLISHED: Dict[Tuple[str, str], Tuple[float, str]] = {
    ("kd", "r34_r18"): (71.03, "mdistiller_dkd"), ("kd", "r50_mv1"): (70.50, "mdistiller_dkd"),
    ("dkd", "r34_r18"): (71.70, "mdistiller_dkd"), ("dkd", "r50_mv1"): (72.05, "mdistiller_dkd"),
    ("review_kd", "r34_r18"): (71.61, "reviewkd_readme"), ("review_kd", "r50_mv1"): (72.56, "reviewkd_readme"),
    ("dist", "r34_r18"): (72.07, "dist_readme"), ("dist", "r50_mv1"): (73.24, "dist_readme"),
    ("crd", "r34_r18"): (71.17, "crd_nd"), ("crd", "r50_mv1"): (71.37, "crd_nd"),
    ("ce", "r34_r18"): (69.76, "dist_readme"), ("ce", "r50_mv1"): (70.13, "dist_readme"),
}
TEACHERS: Dict[str, Tuple[float, str]] = {"imagenet_resnet34": (73.31, "dist_readme"),
                                          "imagenet_resnet50": (76.16, "dist_readme")}


def published(method: str, pair: str) -> Optional[Tuple[float, str]]:
  return PUBLISHED.get((method, pair))


def pairs_of(method: str) -> Tuple[str, ...]:
  return tuple(p for m, p in PUBLISHED if m == method)


def pair_name(pair: str) -> str:
  import im_common  # pylint: disable=import-outside-toplevel
  return im_common.pair_name(pair)
