"""LSFD in the paper's setting (Park & Kwak, arXiv:2111.10988; METHODS.md item 2): RCAN teacher → small RCAN
student (10 groups × 6 RCABs, the FAKD reference's student; the LSFD text calls it "small RCAN" without
sizes), DIV2K training, Set5/Set14/B100/Urban100 testing, ×2/×3/×4. The distillation reads the student's
residual-group outputs 3, 7 and 10 against the teacher's (the FAKD reference's taps).

Train the teacher first (experiments/sr_div2k_teacher.py at the same scale), then:
  python -m kd_jax train --config experiments/sr_div2k_lsfd.py --config.data.scale=4 \
      --config.data.hr_dir=... --config.data.lr_dir=... --config.data.test_hr_dir=... --config.data.test_lr_dir=... \
      --config.teacher.workdir=runs/div2k_rcan_x4 --workdir runs/div2k_lsfd_x4
The same student without distillation: --config.loss="{'supervised': {'weight': 1.0}}". FAKD instead:
--config.loss="{'supervised': {'weight': 0.5}, 'sr_output': {'weight': 0.5}, 'fakd': {'weight': 1.0,
'stages': (2, 6, 9), 'teacher_stages': (2, 6, 9)}}" (the reference's weights: α = 0.5 and its SA weight).

Reported PSNR of the LSFD student (dB, Y; from a benchmark aggregator, METHODS.md item 2): ×2 Set5 38.189,
Set14 33.882, B100 32.323, Urban100 32.704; ×3 34.666, 30.525, —, 28.689; ×4 32.497, 28.783, —, 26.547.
Not reproduced here (no GPU and no DIV2K on the machine these configs were written on). The LSFD weight λ
(the paper tunes it between 1 and 10) and the attention temperature are ours to choose: see
docs/methods.md ("Super-resolution") for what the embedded study showed.
"""

import ml_collections

import sr_div2k_teacher


def get_config():
  c = sr_div2k_teacher.get_config()
  c.student.model = "rcan_small"
  c.teacher.model = "rcan"
  c.loss = ml_collections.ConfigDict({"supervised": {"weight": 1.0},
                                      "lsfd": {"weight": 1.0, "stages": (2, 6, 9), "teacher_stages": (2, 6, 9)}})
  return c
