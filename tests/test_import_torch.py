"""PyTorch checkpoints in and out (`kd_jax.torch_io`, `python -m kd_jax import-torch` / `export-torch`).

One network of each supported layout family is built in PyTorch (tests/torch_models.py, in the references'
layouts) with random weights and random BatchNorm statistics, saved, converted, and run on the same images on
both sides: logits, the stem, every stage (post- and pre-activation) and the embedding agree to 1e-5, which
pins the layouts (OIHW/HWIO, transposed linears), BatchNorm's eps and the stride-2 padding; the other depths
and widths are compared key by key and shape by shape. The conversion back gives PyTorch the very same
tensors. Mismatched files are refused with every bad key named, and nothing is written.
"""

import json
import os
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_models as tm  # noqa: E402  (after the torch check: it imports torch)

import kd_jax  # noqa: E402
from kd_jax import cli, torch_io  # noqa: E402
from kd_jax import models as kd_models  # noqa: E402
from kd_jax.errors import KDJaxError  # noqa: E402

CLASSES = 10
# (registered name, input size, file the state dict is saved as): one per layout family, with the parts that
# set the families apart (projection shortcuts, bottlenecks, grouped and depthwise convs, channel shuffles,
# max pools, pre-activation blocks, four ways of naming a head). Converting checks the whole key set and every
# shape against the reference's state dict as well.
CASES = [
    ("resnet8x4", 32, "repdistiller.pth"),         # {'model': state_dict, 'epoch': ...}, RepDistiller's save
    ("wrn_16_2", 32, "plain.pth"),
    ("vgg13", 32, "plain.pth"),
    ("mobilenetv2_half", 32, "dataparallel.pth"),  # keys prefixed 'module.' (nn.DataParallel)
    ("shufflenetv1", 32, "plain.pth"),
    ("shufflenetv2", 32, "plain.pth"),
    ("imagenet_resnet18", 64, "plain.safetensors"),
    ("imagenet_resnet50", 64, "plain.pth"),
    ("resnet50", 16, "plain.pth"),                 # RepDistiller's CIFAR ResNet-50: `shortcut`, `linear`
    ("imagenet_mobilenetv1", 32, "plain.pth"),
]
# Other depths and widths of those families (the deepest among them: two-digit block indices): their keys and
# shapes against the reference, without running them (a compile each would double this module's time).
KEYS_ONLY = ["resnet20", "resnet32x4", "resnet56", "resnet110", "wrn_40_2", "vgg8", "mobilenetv2",
             "imagenet_resnet34", "imagenet_resnet101"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
  """PyTorch on one thread while this module runs: its worker threads spin-wait for each other, and beside
  XLA's threads on two cores the first forward of a ResNet-50 took 3.6 s instead of 0.1 s."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def reference(name: str, classes: int = CLASSES, seed: int = 0):
  """The PyTorch reference of `name` with random weights and BatchNorm statistics, in eval mode."""
  torch.manual_seed(seed)
  return tm.randomize(tm.BUILDERS[name](classes), seed + 1)


def save(net, path: str) -> str:
  """Saves `net`'s state dict as `path`'s name says: '.safetensors', or a torch file 'plain', wrapped as
  RepDistiller does ('repdistiller') or with DataParallel's prefix ('dataparallel')."""
  state = net.state_dict()
  if path.endswith(".safetensors"):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()}, path)
  elif os.path.basename(path).startswith("repdistiller"):
    torch.save({"model": state, "epoch": 240, "accuracy": torch.tensor(77.5)}, path)
  elif os.path.basename(path).startswith("dataparallel"):
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
  else:
    torch.save(state, path)
  return path


def images(size: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(2, 3, size, size)).astype(np.float32)  # NCHW


def kd_jax_outputs(model, variables, x_nchw: np.ndarray):
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return jax.device_get(forward(variables, x_nchw.transpose(0, 2, 3, 1)))


def nhwc(t) -> np.ndarray:
  t = t.numpy()
  return t.transpose(0, 2, 3, 1) if t.ndim == 4 else t


def assert_outputs_match(name: str, got, want) -> None:
  """kd_jax's ModelOutput against the reference's features, field by field, to 1e-5."""
  close = lambda a, b, what: np.testing.assert_allclose(a, nhwc(b), rtol=1e-5, atol=1e-5, err_msg=f"{name} {what}")
  close(got.prediction, want["logits"], "logits")
  close(got.embedding, want["embedding"], "embedding")
  assert len(got.stages) == len(want["stages"]) and len(got.preact_stages) == len(want["preact_stages"])
  for i, (a, b) in enumerate(zip(got.stages, want["stages"])):
    close(a, b, f"stage {i}")
  for i, (a, b) in enumerate(zip(got.preact_stages, want["preact_stages"])):
    if name == "shufflenetv2":  # RepDistiller's pre-activation is taken before the unit's shuffle (docs/models.md)
      b = tm.channel_shuffle(b, 2)
    close(a, b, f"preact stage {i}")
  if got.stem is not None:
    close(got.stem, want["stem"], "stem")


@pytest.mark.parametrize("name,size,filename", CASES, ids=[c[0] for c in CASES])
def test_converted_model_computes_what_pytorch_computes_and_converts_back(name, size, filename, tmp_path):
  net = reference(name)
  state = torch_io.read_state_dict(save(net, str(tmp_path / filename)))
  variables, classes = torch_io.convert_state_dict(state, name)
  assert classes == CLASSES
  x = images(size)
  with torch.no_grad():
    want = net(torch.from_numpy(x))
  assert_outputs_match(name, kd_jax_outputs(kd_models.create_model(name, classes), variables, x), want)

  # Back to PyTorch: the same tensors bit for bit, loadable strictly, computing the same logits.
  back = torch_io.torch_state_dict(name, variables, step=7)
  original = net.state_dict()
  assert set(back) == set(original)
  for key, value in original.items():
    expected = np.asarray(7) if key.endswith("num_batches_tracked") else value.numpy()
    np.testing.assert_array_equal(back[key], expected, err_msg=key)
  fresh = tm.BUILDERS[name](classes).eval()
  fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
  with torch.no_grad():
    np.testing.assert_array_equal(fresh(torch.from_numpy(x))["logits"].numpy(), want["logits"].numpy())


def test_every_supported_model_has_a_reference():
  assert set(tm.BUILDERS) == set(torch_io.TORCH_LAYOUTS)


@pytest.mark.parametrize("name", KEYS_ONLY)
def test_reference_keys_and_shapes(name):
  """`name` against its reference built on PyTorch's meta device (no memory, no compute)."""
  with torch.device("meta"):
    net = tm.BUILDERS[name](100)
  want = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
  layout = torch_io.TORCH_LAYOUTS[name]
  assert {k: slot.torch_shape for k, slot in torch_io.torch_slots(name, 100, layout.image_shape).items()} == want


@pytest.fixture(scope="module")
def resnet8_state():
  """A small reference's state dict as numpy arrays (the error cases edit copies of it)."""
  return {k: v.numpy() for k, v in reference("resnet8").state_dict().items()}


def _write_safetensors(state, path) -> str:
  from safetensors.numpy import save_file
  save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
  return str(path)


@pytest.mark.parametrize("edit,words", [
    ("missing", ["layer2.0.conv1.weight [32, 16, 3, 3]: missing from the file"]),
    ("extra", ["layer4.0.conv1.weight [8, 8, 3, 3]: in the file but not in the model"]),
    ("shape", ["layer1.0.bn1.weight: the file has [17], the model expects [16]",
               "layer1.0.conv1.weight: the file has [16, 16, 5, 5], the model expects [16, 16, 3, 3]"]),
])
def test_a_file_that_does_not_fit_is_refused_naming_each_key_and_nothing_is_written(
    edit, words, resnet8_state, tmp_path, capsys):
  state = dict(resnet8_state)
  if edit == "missing":
    del state["layer2.0.conv1.weight"]
  elif edit == "extra":
    state["layer4.0.conv1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
  else:
    state["layer1.0.bn1.weight"] = np.ones(17, np.float32)
    state["layer1.0.conv1.weight"] = np.zeros((16, 16, 5, 5), np.float32)
  path = _write_safetensors(state, tmp_path / "bad.safetensors")
  workdir = tmp_path / "run"
  with pytest.raises(KDJaxError) as e:
    torch_io.import_torch(path, "resnet8", str(workdir))
  for w in words:
    assert w in str(e.value)
  assert "resnet8" in str(e.value) and "models/resnet.py" in str(e.value)
  assert sorted(os.listdir(tmp_path)) == ["bad.safetensors"]  # no run directory, no staging directory
  assert cli.main(["import-torch", path, "--model", "resnet8", "--workdir", str(workdir)]) == 2
  assert words[0] in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ["bad.safetensors"]


def test_an_import_that_fails_while_writing_leaves_nothing(resnet8_state, tmp_path, monkeypatch):
  from kd_jax.train import checkpoint as ckpt
  path = _write_safetensors(resnet8_state, tmp_path / "ok.safetensors")
  real = ckpt.export_model

  def crash_after_writing(workdir, variables, info):
    real(workdir, variables, info)
    raise OSError("disk full")

  monkeypatch.setattr(ckpt, "export_model", crash_after_writing)
  with pytest.raises(OSError):
    torch_io.import_torch(path, "resnet8", str(tmp_path / "run"))
  assert sorted(os.listdir(tmp_path)) == ["ok.safetensors"]


def test_refusals_say_why(resnet8_state, tmp_path):
  path = _write_safetensors(resnet8_state, tmp_path / "r8.safetensors")
  with pytest.raises(KDJaxError, match="no PyTorch layout.*Supported: .*resnet8x4"):
    torch_io.import_torch(path, "wrn_16_2_dw_sep", str(tmp_path / "a"))
  with pytest.raises(KDJaxError, match="classifier has 10 classes but the dataset has 100"):
    torch_io.import_torch(path, "resnet8", str(tmp_path / "b"), dataset="cifar100")
  with pytest.raises(KDJaxError, match="'cifar-10' is not a dataset kd_jax knows, but close to 'cifar10'"):
    torch_io.import_torch(path, "resnet8", str(tmp_path / "b"), dataset="cifar-10")
  with pytest.raises(KDJaxError, match="close to 'cifar100'"):
    torch_io.import_torch(path, "resnet8", str(tmp_path / "b"), dataset="CIFAR100")
  assert not os.path.exists(tmp_path / "b")
  with pytest.raises(KDJaxError, match="No key .* starts with --prefix 'student.'"):
    torch_io.import_torch(path, "resnet8", str(tmp_path / "c"), prefix="student.")
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "something").write_text("")
  with pytest.raises(KDJaxError, match="already exists"):
    torch_io.import_torch(path, "resnet8", str(tmp_path / "taken"))
  torch.save({"optimizer": {"lr": 0.1}}, tmp_path / "no_model.pth")
  with pytest.raises(KDJaxError, match="no state dict"):
    torch_io.read_state_dict(str(tmp_path / "no_model.pth"))
  torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module: refused, never executed
  with pytest.raises(KDJaxError, match="weights_only=True"):
    torch_io.read_state_dict(str(tmp_path / "module.pth"))
  # A whole mdistiller distiller (DataParallel, student and teacher): --prefix picks the student.
  torch.save({"model": {f"module.{who}.{k}": torch.from_numpy(v) for who in ("student", "teacher")
                        for k, v in resnet8_state.items()}}, tmp_path / "distiller.pth")
  picked = torch_io.read_state_dict(str(tmp_path / "distiller.pth"), prefix="student.")
  assert set(picked) == {k for k in resnet8_state if not k.endswith("num_batches_tracked")}


def test_safetensors_files_convert_without_torch(resnet8_state, tmp_path, monkeypatch):
  """With `import torch` failing, .safetensors files still go both ways; a .pth file says what to install."""
  path = _write_safetensors(resnet8_state, tmp_path / "r8.safetensors")
  monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now raises ImportError
  torch_io.import_torch(path, "resnet8", str(tmp_path / "run"))
  torch_io.export_torch(str(tmp_path / "run"), str(tmp_path / "back.safetensors"))
  from safetensors.numpy import load_file
  back = load_file(str(tmp_path / "back.safetensors"))
  assert set(back) == set(resnet8_state)
  for key, value in resnet8_state.items():
    if not key.endswith("num_batches_tracked"):
      np.testing.assert_array_equal(back[key], value, err_msg=key)
  with pytest.raises(KDJaxError, match=r"needs PyTorch.*pip install 'kd_jax\[torch\]'"):
    torch_io.export_torch(str(tmp_path / "run"), str(tmp_path / "back.pth"))
  assert sorted(os.listdir(tmp_path)) == ["back.safetensors", "r8.safetensors", "run"]


def test_cli_import_gives_a_teacher_run_and_export_gives_pytorch_the_network_back(tmp_path, capsys):
  """The commands end to end: a RepDistiller-style file becomes a run that `load_model` and
  `config.teacher.workdir` read; `export-torch` writes .safetensors and .pth files PyTorch loads strictly."""
  from kd_jax.config import base_config
  from kd_jax.train.teachers import load_teachers
  net = reference("resnet8x4")
  path = save(net, str(tmp_path / "repdistiller_resnet8x4.pth"))
  workdir = str(tmp_path / "teacher")
  assert cli.main(["import-torch", path, "--model", "resnet8x4", "--workdir", workdir, "--dataset", "cifar10"]) == 0
  assert f"Run directory: {os.path.abspath(workdir)}" in capsys.readouterr().out
  assert sorted(os.listdir(tmp_path)) == ["repdistiller_resnet8x4.pth", "teacher"]
  with open(os.path.join(workdir, "model.json")) as f:
    info = json.load(f)
  assert {k: info[k] for k in ("model", "dataset", "task", "num_classes", "image_shape")} == {
      "model": "resnet8x4", "dataset": "cifar10", "task": "classification", "num_classes": 10,
      "image_shape": [32, 32, 3]}
  assert info["source"]["sha256"] and info["source"]["layout"].endswith("resnet.py `resnet8x4`")

  x = images(32, seed=1)
  with torch.no_grad():
    want = net(torch.from_numpy(x))
  model, variables = kd_jax.load_model(workdir)
  assert_outputs_match("resnet8x4", kd_jax_outputs(model, variables, x), want)
  config = base_config()
  config.teacher.workdir = workdir
  teachers, teacher_variables = load_teachers(config, CLASSES, x[:1].transpose(0, 2, 3, 1))
  logits = jax.jit(lambda v, im: teachers(v, im).logits)(
      teacher_variables, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(logits, want["logits"].numpy(), rtol=1e-5, atol=1e-5)

  from safetensors.torch import load_file
  for output, read in (("student.safetensors", load_file), ("student.pth", lambda p: torch.load(p, weights_only=True))):
    target = str(tmp_path / "out" / output)
    assert cli.main(["export-torch", "--workdir", workdir, "--output", target]) == 0
    fresh = tm.BUILDERS["resnet8x4"](CLASSES).eval()
    fresh.load_state_dict(read(target), strict=True)
    with torch.no_grad():
      np.testing.assert_array_equal(fresh(torch.from_numpy(x))["logits"].numpy(), want["logits"].numpy())
  assert sorted(os.listdir(tmp_path / "out")) == ["student.pth", "student.safetensors"]  # no staging files left

  assert cli.main(["import-torch", path, "--model", "resnet8x4", "--workdir", workdir]) == 2  # never overwrites
  assert "already exists" in capsys.readouterr().err
  assert cli.main(["export-torch", "--workdir", str(tmp_path / "nothing"), "--output", target]) == 2
