"""The published CIFAR-100 and ImageNet tables as configs: every config loads for every pair it is run on, its
values are the reference code's, every published number has a source (and is quoted in its config's
docstring), and run_table.py --quick runs a small table end to end on tfds mock data."""

import glob
import os
import re
import sys

import pytest

from kd_jax.config import load_config_file, load_python_file, validate
from kd_jax.errors import KDJaxError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR = os.path.join(ROOT, "experiments", "cifar100")
IMAGENET = os.path.join(ROOT, "experiments", "imagenet")
NOT_METHODS = ("published.py", "c100_common.py", "run_table.py", "im_common.py")


def _methods(folder):
  return sorted(p for p in glob.glob(os.path.join(folder, "*.py")) if os.path.basename(p) not in NOT_METHODS)


def _published(folder):
  return load_python_file(os.path.join(folder, "published.py"), "published").__globals__


def _cifar(method, pair=None):
  return load_config_file(os.path.join(CIFAR, f"{method}.py") + (f":{pair}" if pair else ""))


@pytest.mark.parametrize("folder", [CIFAR, IMAGENET], ids=os.path.basename)
def test_every_config_loads_for_every_pair_it_takes_and_every_published_cell_has_a_config(folder):
  data = _published(folder)
  pairs = data["PAIRS"] if "PAIRS" in data else None
  if pairs is None:
    sys.path.append(os.path.dirname(folder))
    import cifar100_pairs  # pylint: disable=import-outside-toplevel
    pairs = cifar100_pairs.PAIRS if folder == CIFAR else ("r34_r18", "r50_mv1")
  methods = {}
  for path in _methods(folder):
    load_config_file(path)  # the default argument
    get_config = load_python_file(path, "get_config")
    method = os.path.basename(path)[:-3]
    # The pairs the table runs it on (its published ones, or its TABLE_PAIRS); every pair of the registry costs
    # ~25 ms a load, too slow for CI, and pairs_name/use_pair are shared, so a sample of others is enough.
    allowed = get_config.__globals__.get("TABLE_PAIRS") or (data["pairs_of"](method) + tuple(pairs)[:2])
    for pair in allowed:
      validate(get_config(pair))
    methods[method] = allowed
  for method, pair in data["PUBLISHED"]:
    assert method in methods and pair in methods[method], (method, pair)


@pytest.mark.parametrize("folder", [CIFAR, IMAGENET], ids=os.path.basename)
def test_every_published_number_has_a_source_and_is_quoted_in_its_configs_docstring(folder):
  data = _published(folder)
  for (method, pair), (top1, source) in data["PUBLISHED"].items():
    assert source in data["SOURCES"] and data["SOURCES"][source], (method, pair)
    assert 0.0 < top1 < 100.0
    with open(os.path.join(folder, f"{method}.py")) as f:
      doc = f.read().split('"""')[1]
    assert re.search(rf"{pair}\s+{top1:.2f}", doc), (method, pair, top1)
  for model, (top1, source) in data["TEACHERS"].items():
    assert source in data["SOURCES"] and 0.0 < top1 < 100.0, model


def test_cifar_values_follow_the_reference_code():
  assert _cifar("kd").loss.to_dict() == {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
  for method, term, beta in (("fitnet", "fitnet", 100.0), ("at", "at", 1000.0), ("sp", "sp", 3000.0),
                             ("cc", "cc", 0.02), ("vid", "vid", 1.0), ("rkd", "rkd", 1.0), ("pkt", "pkt", 30000.0),
                             ("nst", "nst", 50.0), ("crd", "crd", 0.8)):
    loss = _cifar(method).loss
    assert loss.ce.weight == 1.0 and loss[term].weight == beta and set(loss) == {"ce", term}, method
  crd = _cifar("crd").loss.crd
  assert (crd.feat_dim, crd.nce_k, crd.nce_t, crd.nce_m) == (128, 16384, 0.07, 0.5)
  assert _cifar("fitnet").loss.fitnet.stage == 1  # RepDistiller's --hint_layer 2
  ft = _cifar("ft")
  assert ft.loss.ft.weight == 200.0 and ft.loss.ft.form == "reference" and ft.phases[0]["epochs"] == 30
  assert ft.phases[0]["optim"]["lr"] == 0.01 and _cifar("ft", "vgg13_vgg8").phases[0]["optim"]["lr"] == 0.05
  fsp = _cifar("fsp")
  assert fsp.phases[0]["epochs"] == 30 and fsp.loss.to_dict() == {"ce": {"weight": 1.0}}
  with pytest.raises(KDJaxError, match="equal channel"):
    _cifar("fsp", "wrn40_2_wrn40_1")  # N/A in RepDistiller's table
  assert _cifar("ab").phases[0]["epochs"] == 30
  dkd = {p: _cifar("dkd", p).loss.dkd for p in ("res32x4_res8x4", "res56_res20", "wrn40_2_wrn16_2", "vgg13_mv2")}
  assert [d.beta for d in dkd.values()] == [8.0, 2.0, 6.0, 6.0]
  assert all((d.alpha, d.temperature, d.warmup_epochs) == (1.0, 4.0, 20.0) for d in dkd.values())
  review = _cifar("review_kd", "res32x4_shuv2")
  assert (review.loss.review_kd.weight, review.batch_size, review.optim.lr) == (8.0, 128, 0.02)
  assert _cifar("review_kd", "res56_res20").loss.review_kd.weight == 0.6
  ls = _cifar("ls_kd", "res50_mv2").loss
  assert (ls.ce.weight, ls.ls_kd.weight, ls.ls_kd.temperature) == (0.1, 1.0, 3.0)
  dkd_ls = _cifar("dkd_ls", "vgg13_vgg8").loss.dkd
  assert (dkd_ls.alpha, dkd_ls.beta, dkd_ls.temperature, dkd_ls.standardize) == (15.0, 30.0, 2.0, True)
  mv2 = _cifar("kd", "resnet50-mobilenetv2_half")  # RepDistiller's "MobileNetV2" is the half-width one
  assert (mv2.teacher.model, mv2.student.model, mv2.optim.lr) == ("resnet50", "mobilenetv2_half", 0.01)
  assert _cifar("ce").teacher.model == ""


def test_imagenet_recipe_and_data_keys():
  for method in ("kd", "at", "crd", "dkd", "review_kd", "dist"):
    for pair, models in (("r34_r18", ("imagenet_resnet34", "imagenet_resnet18")),
                         ("r50_mv1", ("imagenet_resnet50", "imagenet_mobilenetv1"))):
      c = load_config_file(os.path.join(IMAGENET, f"{method}.py:{pair}"))
      assert (c.teacher.model, c.student.model) == models
      assert (c.data.name, c.data.image_size, c.epochs, tuple(c.optim.milestones)) == ("imagenet2012", 224, 100,
                                                                                          (30, 60, 90))
      assert isinstance(c.data.num_workers, int) and c.optim.weight_decay == 1e-4
      assert c.optim.lr == pytest.approx(0.1 * c.batch_size / 256) and c.batch_size in (256, 512)
  kd = load_config_file(os.path.join(IMAGENET, "kd.py:r34_r18"))
  assert kd.loss.to_dict() == {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 1.0}}
  assert load_config_file(os.path.join(IMAGENET, "dkd.py:r50_mv1")).loss.dkd.beta == 2.0
  assert load_config_file(os.path.join(IMAGENET, "review_kd.py:r50_mv1")).loss.review_kd.weight == 8.0


def test_run_table_quick_runs_a_small_table_end_to_end_and_prints_it_beside_the_published_numbers(tmp_path, capsys):
  run_table = load_python_file(os.path.join(CIFAR, "run_table.py"), "main")
  workdir = tmp_path / "table"
  code = run_table(["--workdir", str(workdir), "--methods", "kd", "--pairs", "res32x4_res8x4", "--seeds", "0",
                    "--quick", "--quick-model", "cnn_tiny"])
  out = capsys.readouterr().out
  assert code == 0
  assert "| kd | res32x4_res8x4 |" in out and "| 73.33 |" in out and "repdistiller_t1" in out
  assert "| teacher | resnet32x4 |" in out and "| ce | res32x4_res8x4 |" not in out  # only the methods asked for
  assert (workdir / "kd" / "res32x4_res8x4" / "seed=0" / "results.json").exists()
  assert (workdir / "teachers" / "resnet32x4" / "seed=0" / "results.json").exists()
  assert (workdir / "table.md").read_text().count("\n| ") == 3  # header + 2 rows
