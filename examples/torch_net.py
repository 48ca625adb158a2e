"""A small PyTorch image classifier for the README's PyTorch section: `make` is the factory `edgert convert
torch_net.py:make` calls; `example_inputs` gives its input shape. Run as a script, it writes the same network as
`torch_net.onnx` (opset 17) and `calibration.npy` (64 images in PyTorch's NCHW layout)."""

import numpy as np
import torch
from torch import nn

input_names = ["image"]
output_names = ["scores"]
example_inputs = (torch.rand(1, 3, 64, 64),)


class TinyNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.BatchNorm2d(64), nn.Hardswish())
        self.head = nn.Linear(64, classes)

    def forward(self, image):
        return self.head(self.features(image).mean((2, 3)))


def make():
    torch.manual_seed(0)
    return TinyNet().eval()


if __name__ == "__main__":
    torch.onnx.export(make(), example_inputs, "torch_net.onnx", input_names=input_names, output_names=output_names,
                      opset_version=17, dynamo=False)
    np.save("calibration.npy", np.random.default_rng(0).random((64, 3, 64, 64), dtype=np.float32))
