"""kd_jax.train.writers: tensorboardX is imported without PyTorch, which stays importable."""

import importlib.util
import subprocess
import sys

import pytest


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed: nothing to hide")
def test_importing_the_trainer_does_not_import_torch_and_torch_still_imports():
  code = ("import sys; import kd_jax.train.run, kd_jax.train.writers as w; assert 'torch' not in sys.modules; "
          "import torch; assert torch.zeros(2).sum().item() == 0.0; "
          "assert w.SummaryWriter.__module__ == 'tensorboardX.writer'; print('ok')")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
