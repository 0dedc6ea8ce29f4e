"""The CIFAR-100 teacher → student pairs of the KD benchmarks, and the per-pair values their references use.

The pairs are those of the CRD/RepDistiller benchmark (Tian et al., ICLR 2020, arXiv:1910.10699) that
mdistiller and the Energy KD repository (Seonghak35/EnergyKD, `configs/cifar100/*/<pair>.yaml`) reuse, named
as those yaml files are. Every reference trains ShuffleNet and MobileNetV2 students at lr 0.01 and the others
at 0.05 (RepDistiller's `train_student.py`: `if opt.model_s in ['MobileNetV2', 'ShuffleV1', 'ShuffleV2']:
opt.learning_rate = 0.01`).

A pair may also be named by its models, `teacher-student` (`resnet32x4-resnet8x4`). A config that takes a
pair is run as `--config experiments/<file>.py:<pair>`, e.g.
`--config experiments/cifar100_energy_kd.py:res32x4_shuv2`.
"""

import ml_collections

from kd_jax.errors import KDJaxError

# pair name -> (teacher model, student model). "MobileNetV2" in these benchmarks is RepDistiller's (and
# mdistiller's) `mobile_half`, width 0.5: kd_jax's `mobilenetv2_half`, not the width-1 `mobilenetv2`.
PAIRS = {
    # CRD Table 1 / RepDistiller README table 1: teacher and student of the same kind.
    "wrn40_2_wrn16_2": ("wrn_40_2", "wrn_16_2"),
    "wrn40_2_wrn40_1": ("wrn_40_2", "wrn_40_1"),
    "res56_res20": ("resnet56", "resnet20"),
    "res110_res20": ("resnet110", "resnet20"),
    "res110_res32": ("resnet110", "resnet32"),
    "res32x4_res8x4": ("resnet32x4", "resnet8x4"),
    "vgg13_vgg8": ("vgg13", "vgg8"),
    # CRD Table 2 / RepDistiller README table 2: different kinds.
    "vgg13_mv2": ("vgg13", "mobilenetv2_half"),
    "res50_mv2": ("resnet50", "mobilenetv2_half"),
    "res50_vgg8": ("resnet50", "vgg8"),
    "res32x4_shuv1": ("resnet32x4", "shufflenetv1"),
    "res32x4_shuv2": ("resnet32x4", "shufflenetv2"),
    "wrn40_2_shuv1": ("wrn_40_2", "shufflenetv1"),
    # The logit-standardization README's table 2 adds these.
    "res32x4_wrn16_2": ("resnet32x4", "wrn_16_2"),
    "res32x4_wrn40_2": ("resnet32x4", "wrn_40_2"),
    "wrn40_2_res8x4": ("wrn_40_2", "resnet8x4"),
    "wrn40_2_mv2": ("wrn_40_2", "mobilenetv2_half"),
}
SAME_KIND_PAIRS = ("wrn40_2_wrn16_2", "wrn40_2_wrn40_1", "res56_res20", "res110_res20", "res110_res32",
                   "res32x4_res8x4", "vgg13_vgg8")
CROSS_KIND_PAIRS = ("vgg13_mv2", "res50_mv2", "res50_vgg8", "res32x4_shuv1", "res32x4_shuv2", "wrn40_2_shuv1")
SMALL_LR_STUDENTS = ("mobilenetv2", "mobilenetv2_half", "shufflenetv1", "shufflenetv2")


def student_lr(student: str) -> float:
  """The references' learning rate for `student`: 0.01 for ShuffleNet/MobileNetV2 students, else 0.05."""
  return 0.01 if student in SMALL_LR_STUDENTS else 0.05


def pair_name(pair: str) -> str:
  """The PAIRS key of `pair`, which may also be given as `teacher-student` model names
  (`resnet32x4-resnet8x4`); an unknown pair raises `KDJaxError` listing the known ones."""
  if pair in PAIRS:
    return pair
  by_models = {f"{t}-{s}": name for name, (t, s) in PAIRS.items()}
  if pair in by_models:
    return by_models[pair]
  raise KDJaxError(f"Unknown CIFAR-100 pair {pair!r}; choose one of {', '.join(PAIRS)} (or teacher-student "
                   "model names, e.g. resnet32x4-resnet8x4).")


def use_pair(c: ml_collections.ConfigDict, pair: str) -> ml_collections.ConfigDict:
  """`c` with the pair's teacher and student models and the student's reference learning rate."""
  pair = pair_name(pair)
  c.teacher.model, c.student.model = PAIRS[pair]
  c.optim.lr = student_lr(c.student.model)
  return c
