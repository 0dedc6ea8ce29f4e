"""The CIFAR-100 teacher → student pairs of the KD benchmarks, and the per-pair values their references use.

The pairs are those of the CRD/RepDistiller benchmark (Tian et al., ICLR 2020, arXiv:1910.10699) that
mdistiller and the Energy KD repository (Seonghak35/EnergyKD, `configs/cifar100/*/<pair>.yaml`) reuse, named
as those yaml files are. Every reference trains ShuffleNet and MobileNetV2 students at lr 0.01 and the others
at 0.05 (RepDistiller's `train_student.py`: `if opt.model_s in ['MobileNetV2', 'ShuffleV1', 'ShuffleV2']:
opt.learning_rate = 0.01`).

A config that takes a pair is run as `--config experiments/<file>.py:<pair>`, e.g.
`--config experiments/cifar100_energy_kd.py:res32x4_shuv2`.
"""

import ml_collections

from kd_jax.errors import KDJaxError

# pair name -> (teacher model, student model)
PAIRS = {
    "res32x4_res8x4": ("resnet32x4", "resnet8x4"),
    "res56_res20": ("resnet56", "resnet20"),
    "res110_res32": ("resnet110", "resnet32"),
    "wrn40_2_wrn16_2": ("wrn_40_2", "wrn_16_2"),
    "wrn40_2_wrn40_1": ("wrn_40_2", "wrn_40_1"),
    "vgg13_vgg8": ("vgg13", "vgg8"),
    "vgg13_mv2": ("vgg13", "mobilenetv2"),
    "res32x4_shuv1": ("resnet32x4", "shufflenetv1"),
    "res32x4_shuv2": ("resnet32x4", "shufflenetv2"),
}
SMALL_LR_STUDENTS = ("mobilenetv2", "shufflenetv1", "shufflenetv2")


def student_lr(student: str) -> float:
  """The references' learning rate for `student`: 0.01 for ShuffleNet/MobileNetV2 students, else 0.05."""
  return 0.01 if student in SMALL_LR_STUDENTS else 0.05


def use_pair(c: ml_collections.ConfigDict, pair: str) -> ml_collections.ConfigDict:
  """`c` with the pair's teacher and student models and the student's reference learning rate."""
  if pair not in PAIRS:
    raise KDJaxError(f"Unknown CIFAR-100 pair {pair!r}; choose one of {', '.join(PAIRS)}.")
  c.teacher.model, c.student.model = PAIRS[pair]
  c.optim.lr = student_lr(c.student.model)
  return c
