"""PyTorch architectures as torchvision defines them, written out here (torchvision's wheel would pull another
torch): MobileNetV3-Small and ResNet-18 at reduced input sizes, and a model with two inputs and two outputs of equal
shape. Factories return evaluated modules with seeded random weights; `example_inputs` gives their input shapes."""

import torch
from torch import nn

SIZE = 96  # input height and width: small enough for the tests, large enough for every stride


def _divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class SqueezeExcitation(nn.Module):
    def __init__(self, channels, squeeze):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


def _conv(cin, cout, k, stride, groups, act):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout, eps=0.001, momentum=0.01), act() if act else nn.Identity())


class InvertedResidual(nn.Module):
    def __init__(self, cin, k, expanded, cout, se, hs, stride):
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers = [] if expanded == cin else [_conv(cin, expanded, 1, 1, 1, act)]
        layers.append(_conv(expanded, expanded, k, stride, expanded, act))
        if se:
            layers.append(SqueezeExcitation(expanded, _divisible(expanded // 4)))
        layers.append(_conv(expanded, cout, 1, 1, 1, None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


# torchvision's mobilenet_v3_small settings: kernel, expanded, out, SE, hard-swish, stride
_SMALL = [(3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
          (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
          (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
          (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1)]


class MobileNetV3Small(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        layers, cin = [_conv(3, 16, 3, 2, 1, nn.Hardswish)], 16
        for k, exp, out, se, hs, stride in _SMALL:
            layers.append(InvertedResidual(cin, k, exp, out, se, hs, stride))
            cin = out
        layers.append(_conv(cin, 576, 1, 1, 1, nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1024, classes))

    def forward(self, image):
        x = nn.functional.adaptive_avg_pool2d(self.features(image), 1).flatten(1)
        return self.classifier(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    output_names = ["logits"]

    def __init__(self, classes=1000):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, classes)

    def forward(self, pixels):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(pixels))))
        return self.fc(nn.functional.adaptive_avg_pool2d(self.layers(x), 1).flatten(1))


class TwoByTwo(nn.Module):
    """Two inputs (an image and a vector), two outputs of the same shape: only names tell them apart."""

    input_names = ["frame", "hint"]
    output_names = ["left", "right"]

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.b = nn.Linear(16, 6), nn.Linear(16, 6)

    def forward(self, frame, hint):
        f = torch.relu(self.conv(frame)).mean((2, 3))
        x = torch.cat([f, hint], 1)
        return self.a(x), torch.tanh(self.b(x))


def _seeded(module):
    torch.manual_seed(0)
    for m in module.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return module.eval()


def mobilenet_v3_small():
    torch.manual_seed(0)
    return _seeded(MobileNetV3Small()), (torch.rand(1, 3, SIZE, SIZE),)


def resnet18():
    torch.manual_seed(0)
    return _seeded(ResNet18()), (torch.rand(1, 3, SIZE, SIZE),)


def two_by_two():
    torch.manual_seed(0)
    return _seeded(TwoByTwo())


example_inputs = (torch.rand(1, 3, 32, 32), torch.rand(1, 8))  # two_by_two's
