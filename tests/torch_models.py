"""PyTorch reference networks for tests/test_import_torch.py, written for these tests in the layouts of the
models kd_jax converts, so that their `state_dict()` keys are the ones real checkpoints have:

  - torchvision's ImageNet ResNets (`torchvision/models/resnet.py`) and RepDistiller's CIFAR ResNets
    (`models/resnet.py`): `conv1`, `bn1`, `layer{s}.{b}.conv{k}`, `...downsample.{0,1}`, `fc`;
  - RepDistiller's CIFAR ResNet-50 (`models/resnetv2.py`): the same with `shortcut.{0,1}` and `linear`;
  - RepDistiller's WRN (`models/wrn.py`): `block{s}.layer.{b}.{bn1,conv1,bn2,conv2,convShortcut}`, `bn1`, `fc`;
  - RepDistiller's VGG with BatchNorm (`models/vgg.py`): `block{b}.{3i,3i+1}`, `classifier`;
  - RepDistiller's MobileNetV2 (`models/mobilenetv2.py`): `conv1.{0,1}`, `blocks.{g}.{i}.conv.{0,1,3,4,6,7}`,
    `conv2.{0,1}`, `classifier.0`;
  - RepDistiller's ShuffleV1 / ShuffleV2 (`models/ShuffleNetv1.py`, `models/ShuffleNetv2.py`): `conv1`, `bn1`,
    `layer{s}.{b}.{conv,bn}{k}`, (V2: `conv2`, `bn2`), `linear`;
  - mdistiller's ImageNet MobileNetV1 (`mdistiller/models/imagenet/mobilenetv1.py`): `model.{i}.{0,1,3,4}`, `fc`.

Every network's `forward` returns what kd_jax's `ModelOutput` exposes, NCHW: a dict with `stem` (None where
kd_jax has none), `stages`, `preact_stages`, `embedding` and `logits`, computed as the references compute
their `is_feat=True, preact=True` features. Pooling is a global mean (the references' fixed-size pools on
their native input sizes), so the tests can run on small inputs.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
  return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)


def _outputs(stem, stages, preacts, embedding, logits) -> Dict[str, object]:
  return {"stem": stem, "stages": list(stages), "preact_stages": list(preacts), "embedding": embedding,
          "logits": logits}


def randomize(model: nn.Module, seed: int) -> nn.Module:
  """Random, non-trivial BatchNorm affine parameters and running statistics (and conv/linear biases), so a
  swapped mean/var or scale/bias shows in the outputs; the model is put in eval mode."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
        m.num_batches_tracked.fill_(1234)
      elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
  return model.eval()


# ResNets --------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin: int, width: int, stride: int, shortcut: str):
    super().__init__()
    self.conv1, self.bn1 = _conv(cin, width, 3, stride), nn.BatchNorm2d(width)
    self.conv2, self.bn2 = _conv(width, width, 3), nn.BatchNorm2d(width)
    self.shortcut_name = shortcut
    if stride != 1 or cin != width:
      setattr(self, shortcut, nn.Sequential(_conv(cin, width, 1, stride), nn.BatchNorm2d(width)))

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    projection = getattr(self, self.shortcut_name, None)
    pre = y + (x if projection is None else projection(x))
    return F.relu(pre), pre


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin: int, width: int, stride: int, shortcut: str):
    super().__init__()
    out = 4 * width
    self.conv1, self.bn1 = _conv(cin, width, 1), nn.BatchNorm2d(width)
    self.conv2, self.bn2 = _conv(width, width, 3, stride), nn.BatchNorm2d(width)  # strided 3x3 ("v1.5")
    self.conv3, self.bn3 = _conv(width, out, 1), nn.BatchNorm2d(out)
    self.shortcut_name = shortcut
    if stride != 1 or cin != out:
      setattr(self, shortcut, nn.Sequential(_conv(cin, out, 1, stride), nn.BatchNorm2d(out)))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(y)))))
    projection = getattr(self, self.shortcut_name, None)
    pre = y + (x if projection is None else projection(x))
    return F.relu(pre), pre


class ResNet(nn.Module):
  """A ResNet: CIFAR (3x3 stem, no pool), torchvision (7x7/2 stem, 3x3/2 max pool) or RepDistiller's
  resnetv2 (3x3 stem, `shortcut`, `linear`)."""

  def __init__(self, block, blocks: Sequence[int], widths: Sequence[int], stem_width: int, num_classes: int,
               imagenet_stem: bool = False, shortcut: str = "downsample", head: str = "fc"):
    super().__init__()
    self.imagenet_stem, self.head_name, self.num_stages = imagenet_stem, head, len(widths)
    self.conv1 = _conv(3, stem_width, 7, 2) if imagenet_stem else _conv(3, stem_width, 3)
    self.bn1 = nn.BatchNorm2d(stem_width)
    cin = stem_width
    for s, (width, n) in enumerate(zip(widths, blocks)):
      units = []
      for b in range(n):
        units.append(block(cin, width, 2 if s > 0 and b == 0 else 1, shortcut))
        cin = width * block.expansion
      setattr(self, f"layer{s + 1}", nn.Sequential(*units))
    setattr(self, head, nn.Linear(cin, num_classes))

  def forward(self, x):
    stem = F.relu(self.bn1(self.conv1(x)))
    x = F.max_pool2d(stem, 3, 2, 1) if self.imagenet_stem else stem
    stages, preacts = [], []
    for s in range(self.num_stages):
      for unit in getattr(self, f"layer{s + 1}"):
        x, pre = unit(x)
      stages.append(x)
      preacts.append(pre)
    embedding = x.mean((2, 3))
    return _outputs(stem, stages, preacts, embedding, getattr(self, self.head_name)(embedding))


def cifar_resnet(depth: int, widths: Sequence[int], num_classes: int) -> ResNet:
  """RepDistiller's `ResNet(depth, [stem, w1, w2, w3], 'basicblock')`."""
  n = (depth - 2) // 6
  return ResNet(BasicBlock, (n, n, n), widths[1:], widths[0], num_classes)


def torchvision_resnet(depth: int, num_classes: int) -> ResNet:
  block, blocks = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
                   50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}[depth]
  return ResNet(block, blocks, (64, 128, 256, 512), 64, num_classes, imagenet_stem=True)


def repdistiller_resnet50(num_classes: int) -> ResNet:
  return ResNet(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), 64, num_classes, shortcut="shortcut", head="linear")


# WRN ------------------------------------------------------------------------------------------------------


class WRNBlock(nn.Module):
  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv(cin, cout, 3, stride)
    self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv(cout, cout, 3)
    self.convShortcut = None if cin == cout else _conv(cin, cout, 1, stride)  # noqa: N815 - the reference's name

  def forward(self, x):
    normed = self.bn1(x)
    act = F.relu(normed)
    y = self.conv2(F.relu(self.bn2(self.conv1(act))))
    return y + (x if self.convShortcut is None else self.convShortcut(act)), normed


class NetworkBlock(nn.Module):
  def __init__(self, n: int, cin: int, cout: int, stride: int):
    super().__init__()
    self.layer = nn.Sequential(*[WRNBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)])


class WideResNet(nn.Module):
  def __init__(self, depth: int, widen: int, num_classes: int):
    super().__init__()
    n, widths = (depth - 4) // 6, (16 * widen, 32 * widen, 64 * widen)
    self.conv1 = _conv(3, 16, 3)
    self.block1 = NetworkBlock(n, 16, widths[0], 1)
    self.block2 = NetworkBlock(n, widths[0], widths[1], 2)
    self.block3 = NetworkBlock(n, widths[1], widths[2], 2)
    self.bn1 = nn.BatchNorm2d(widths[2])
    self.fc = nn.Linear(widths[2], num_classes)

  def forward(self, x):
    x = self.conv1(x)
    stages, preacts = [], []
    for s, group in enumerate((self.block1, self.block2, self.block3)):
      for i, unit in enumerate(group.layer):
        x, normed = unit(x)
        if s > 0 and i == 0:  # RepDistiller's preact feature: the next stage's first bn1 on this stage's output
          preacts.append(normed)
      stages.append(x)
    normed = self.bn1(x)
    preacts.append(normed)
    embedding = F.relu(normed).mean((2, 3))
    return _outputs(None, stages, preacts, embedding, self.fc(embedding))


# VGG ------------------------------------------------------------------------------------------------------

VGG_BLOCKS = {8: ((64,), (128,), (256,), (512,), (512,)),
              11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
              13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))}


class VGG(nn.Module):
  def __init__(self, depth: int, num_classes: int):
    super().__init__()
    cin = 3
    for b, widths in enumerate(VGG_BLOCKS[depth]):
      layers = []
      for width in widths:
        layers += [_conv(cin, width, 3, bias=True), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
      setattr(self, f"block{b}", nn.Sequential(*layers[:-1]))  # the block's last ReLU is applied in forward
    self.classifier = nn.Linear(512, num_classes)

  def forward(self, x):
    height = x.shape[2]
    stages, preacts = [], []
    for b in range(5):
      pre = getattr(self, f"block{b}")(x)
      x = F.relu(pre)
      if b > 0:
        stages.append(x)
        preacts.append(pre)
      if b < 3 or (b == 3 and height == 64):
        x = F.max_pool2d(x, 2, 2)
    embedding = x.mean((2, 3))
    return _outputs(None, stages, preacts, embedding, self.classifier(embedding))


# MobileNets -----------------------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
  def __init__(self, cin: int, cout: int, stride: int, ratio: int):
    super().__init__()
    hidden = cin * ratio
    self.residual = stride == 1 and cin == cout
    self.conv = nn.Sequential(_conv(cin, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
                              _conv(hidden, hidden, 3, stride, groups=hidden), nn.BatchNorm2d(hidden), nn.ReLU(),
                              _conv(hidden, cout, 1), nn.BatchNorm2d(cout))

  def forward(self, x):
    return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
  GROUPS = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
            (None, 160, 3, 2), (None, 320, 1, 1))

  def __init__(self, ratio: int, width: float, num_classes: int):
    super().__init__()
    cin = int(32 * width)
    self.conv1 = nn.Sequential(_conv(3, cin, 3, 2), nn.BatchNorm2d(cin), nn.ReLU())
    self.blocks = nn.ModuleList()
    for t, c, n, s in self.GROUPS:
      units = []
      for i in range(n):
        units.append(InvertedResidual(cin, int(c * width), s if i == 0 else 1, ratio if t is None else t))
        cin = int(c * width)
      self.blocks.append(nn.Sequential(*units))
    last = int(1280 * width) if width > 1.0 else 1280
    self.conv2 = nn.Sequential(_conv(cin, last, 1), nn.BatchNorm2d(last), nn.ReLU())
    self.classifier = nn.Sequential(nn.Linear(last, num_classes))

  def forward(self, x):
    x = self.conv1(x)
    stages = []
    for g, group in enumerate(self.blocks):
      x = group(x)
      if g in (1, 2, 4, 6):
        stages.append(x)
    embedding = self.conv2(x).mean((2, 3))
    return _outputs(None, stages, stages, embedding, self.classifier(embedding))


class MobileNetV1(nn.Module):
  """mdistiller's ImageNet MobileNetV1: `model` = stem Sequential, 13 depthwise-separable Sequentials, a pool."""

  BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
            (512, 1), (1024, 2), (1024, 1))

  def __init__(self, num_classes: int):
    super().__init__()
    layers, cin = [nn.Sequential(_conv(3, 32, 3, 2), nn.BatchNorm2d(32), nn.ReLU())], 32
    for cout, stride in self.BLOCKS:
      layers.append(nn.Sequential(_conv(cin, cin, 3, stride, groups=cin), nn.BatchNorm2d(cin), nn.ReLU(),
                                  _conv(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU()))
      cin = cout
    layers.append(nn.AdaptiveAvgPool2d(1))
    self.model = nn.Sequential(*layers)
    self.fc = nn.Linear(1024, num_classes)

  def forward(self, x):
    stem = x = self.model[0](x)
    stages, preacts = [], []
    for i in range(1, 14):
      pre = self.model[i][:-1](x)
      x = F.relu(pre)
      if i in (3, 5, 11, 13):
        stages.append(x)
        preacts.append(pre)
    embedding = x.mean((2, 3))
    return _outputs(stem, stages, preacts, embedding, self.fc(embedding))


# ShuffleNets ----------------------------------------------------------------------------------------------


def channel_shuffle(x, groups: int):
  n, c, h, w = x.shape
  return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Unit(nn.Module):
  def __init__(self, cin: int, branch: int, stride: int, groups: int):
    super().__init__()
    mid = branch // 4
    self.first_groups = 1 if cin == 24 else groups  # the reference's rule: the stem's 24 channels are not grouped
    self.stride = stride
    self.conv1, self.bn1 = _conv(cin, mid, 1, groups=self.first_groups), nn.BatchNorm2d(mid)
    self.conv2, self.bn2 = _conv(mid, mid, 3, stride, groups=mid), nn.BatchNorm2d(mid)
    self.conv3, self.bn3 = _conv(mid, branch, 1, groups=groups), nn.BatchNorm2d(branch)

  def forward(self, x):
    y = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
    y = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(y)))))
    pre = torch.cat([y, F.avg_pool2d(x, 3, 2, 1)], 1) if self.stride == 2 else y + x
    return F.relu(pre), pre


class ShuffleNetV1(nn.Module):
  def __init__(self, num_classes: int, widths=(240, 480, 960), blocks=(4, 8, 4), groups: int = 3):
    super().__init__()
    self.conv1, self.bn1 = _conv(3, 24, 1), nn.BatchNorm2d(24)
    cin = 24
    for s, (width, n) in enumerate(zip(widths, blocks)):
      units = []
      for i in range(n):
        units.append(ShuffleV1Unit(cin, width - cin if i == 0 else width, 2 if i == 0 else 1, groups))
        cin = width
      setattr(self, f"layer{s + 1}", nn.Sequential(*units))
    self.linear = nn.Linear(widths[-1], num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    stages, preacts = [], []
    for layer in (self.layer1, self.layer2, self.layer3):
      for unit in layer:
        x, pre = unit(x)
      stages.append(x)
      preacts.append(pre)
    embedding = x.mean((2, 3))
    return _outputs(None, stages, preacts, embedding, self.linear(embedding))


class ShuffleV2Down(nn.Module):
  def __init__(self, cin: int, cout: int):
    super().__init__()
    mid = cout // 2
    self.conv1, self.bn1 = _conv(cin, cin, 3, 2, groups=cin), nn.BatchNorm2d(cin)
    self.conv2, self.bn2 = _conv(cin, mid, 1), nn.BatchNorm2d(mid)
    self.conv3, self.bn3 = _conv(cin, mid, 1), nn.BatchNorm2d(mid)
    self.conv4, self.bn4 = _conv(mid, mid, 3, 2, groups=mid), nn.BatchNorm2d(mid)
    self.conv5, self.bn5 = _conv(mid, mid, 1), nn.BatchNorm2d(mid)

  def forward(self, x):
    left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
    right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
    right = F.relu(self.bn5(self.conv5(right)))
    return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleV2Unit(nn.Module):
  def __init__(self, channels: int):
    super().__init__()
    half = channels // 2
    self.conv1, self.bn1 = _conv(half, half, 1), nn.BatchNorm2d(half)
    self.conv2, self.bn2 = _conv(half, half, 3, groups=half), nn.BatchNorm2d(half)
    self.conv3, self.bn3 = _conv(half, half, 1), nn.BatchNorm2d(half)

  def forward(self, x):
    half = x.shape[1] // 2
    kept, y = x[:, :half], x[:, half:]
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(y)))))
    pre = self.bn3(self.conv3(y))
    out = channel_shuffle(torch.cat([kept, F.relu(pre)], 1), 2)
    return out, torch.cat([kept, pre], 1)  # RepDistiller's preact: before the shuffle


class ShuffleNetV2(nn.Module):
  def __init__(self, num_classes: int, widths=(116, 232, 464, 1024), blocks=(3, 7, 3)):
    super().__init__()
    self.conv1, self.bn1 = _conv(3, 24, 1), nn.BatchNorm2d(24)
    cin = 24
    for s, (width, n) in enumerate(zip(widths, blocks)):
      units = [ShuffleV2Down(cin, width)] + [ShuffleV2Unit(width) for _ in range(n)]
      setattr(self, f"layer{s + 1}", nn.Sequential(*units))
      cin = width
    self.conv2, self.bn2 = _conv(cin, widths[3], 1), nn.BatchNorm2d(widths[3])
    self.linear = nn.Linear(widths[3], num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    stages, preacts = [], []
    for layer in (self.layer1, self.layer2, self.layer3):
      x = layer[0](x)
      for unit in layer[1:]:
        x, pre = unit(x)
      stages.append(x)
      preacts.append(pre)
    embedding = F.relu(self.bn2(self.conv2(x))).mean((2, 3))
    return _outputs(None, stages, preacts, embedding, self.linear(embedding))


# kd_jax registered name -> a builder of its PyTorch reference with `num_classes` outputs.
BUILDERS = {
    **{f"resnet{d}": (lambda d: lambda c: cifar_resnet(d, (16, 16, 32, 64), c))(d)
       for d in (8, 14, 20, 26, 32, 44, 56, 110)},
    "resnet8x4": lambda c: cifar_resnet(8, (32, 64, 128, 256), c),
    "resnet32x4": lambda c: cifar_resnet(32, (32, 64, 128, 256), c),
    "resnet50": repdistiller_resnet50,
    **{f"imagenet_resnet{d}": (lambda d: lambda c: torchvision_resnet(d, c))(d) for d in (18, 34, 50, 101)},
    "imagenet_mobilenetv1": MobileNetV1,
    **{f"wrn_{d}_{k}": (lambda d, k: lambda c: WideResNet(d, k, c))(d, k)
       for d, k in ((16, 1), (16, 2), (40, 1), (40, 2), (40, 4))},
    **{f"vgg{d}": (lambda d: lambda c: VGG(d, c))(d) for d in (8, 11, 13)},
    "mobilenetv2": lambda c: MobileNetV2(6, 1.0, c),
    "mobilenetv2_half": lambda c: MobileNetV2(6, 0.5, c),
    "shufflenetv1": ShuffleNetV1,
    "shufflenetv2": ShuffleNetV2,
}
