"""YOLO-family detectors written out in PyTorch as Ultralytics' model YAMLs and Megvii's YOLOX lay them out, at a
small width: a shared backbone and neck (Conv-BN-SiLU, C2f, SPPF, an upsampling PAN), three scales at strides 8,
16 and 32, and the head that makes each family what it is:

- `YOLOv8` and `YOLO11`: anchor-free Detect with DFL (16 bins per side), anchors and strides computed from the
  feature shapes inside the graph as Ultralytics' export does; one output (1, 4 + C, N) with boxes as xywh in input
  pixels and class scores after a sigmoid. YOLO11's class branch uses depth-wise convolutions.
- `YOLOv5`: anchor-based Detect, three anchors per cell, objectness; one output (1, N, 5 + C), xywh in pixels.
- `YOLOX`: the decoupled head (box, objectness, classes); one output (1, N, 5 + C), decoded to xywh in pixels
  (`decode=True`, YOLOX's default) or raw (`decode=False`: offsets from the cell and log sizes, as some exports
  ship it).

`tests/detectors/train.py` trains them briefly on `shapes.py`'s synthetic pictures, so that their detections mean
something; the weights are in `weights/`. Written here because `ultralytics` needs torchvision, whose PyPI wheel
does not load beside the CPU torch this project installs."""

from __future__ import annotations

import math

import torch
from torch import nn

STRIDES = (8, 16, 32)
REG_MAX = 16
# YOLOv5's anchors for its P3-P5 outputs, in pixels, scaled down with the input (Ultralytics' are for 640 px)
V5_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))


class Conv(nn.Module):
    def __init__(self, cin, cout, k=1, s=1, g=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, cin, cout, n=1, shortcut=False):
        super().__init__()
        self.c = cout // 2
        self.cv1 = Conv(cin, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin, cout, k=5):
        super().__init__()
        c = cin // 2
        self.cv1, self.cv2 = Conv(cin, c, 1), Conv(c * 4, cout, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Body(nn.Module):
    """Backbone and PAN neck (yolov8n.yaml's layout at width `w`): feature maps at strides 8, 16, 32."""

    def __init__(self, w=16):
        super().__init__()
        self.stem = nn.Sequential(Conv(3, w, 3, 2), Conv(w, 2 * w, 3, 2), C2f(2 * w, 2 * w, 1, True))
        self.p3 = nn.Sequential(Conv(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w, 1, True))
        self.p4 = nn.Sequential(Conv(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w, 1, True))
        self.p5 = nn.Sequential(Conv(8 * w, 16 * w, 3, 2), C2f(16 * w, 16 * w, 1, True), SPPF(16 * w, 16 * w))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td4 = C2f(24 * w, 8 * w)
        self.td3 = C2f(12 * w, 4 * w)
        self.down3 = Conv(4 * w, 4 * w, 3, 2)
        self.bu4 = C2f(12 * w, 8 * w)
        self.down4 = Conv(8 * w, 8 * w, 3, 2)
        self.bu5 = C2f(24 * w, 16 * w)
        self.channels = (4 * w, 8 * w, 16 * w)

    def forward(self, x):
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        t4 = self.td4(torch.cat((self.up(p5), p4), 1))
        n3 = self.td3(torch.cat((self.up(t4), p3), 1))
        n4 = self.bu4(torch.cat((self.down3(n3), t4), 1))
        n5 = self.bu5(torch.cat((self.down4(n4), p5), 1))
        return [n3, n4, n5]


def make_anchors(feats, strides, offset=0.5):
    """Ultralytics' make_anchors: cell centres and strides from the feature maps' own shapes (in the exported graph
    these are Shape, Range and friends when the input size is open)."""
    points, stride_tensor = [], []
    for f, stride in zip(feats, strides):
        _, _, h, w = f.shape
        sx = torch.arange(end=w, dtype=f.dtype) + offset
        sy = torch.arange(end=h, dtype=f.dtype) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), stride, dtype=f.dtype))
    return torch.cat(points), torch.cat(stride_tensor)


class DFL(nn.Module):
    """Distribution focal loss's integral: the expected bin of a softmax over REG_MAX bins, as a fixed 1x1 conv."""

    def __init__(self, c1=REG_MAX):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class DetectV8(nn.Module):
    """Ultralytics' Detect head (v8; `v11` swaps the class branch for depth-wise convolutions)."""

    def __init__(self, nc, channels, v11=False):
        super().__init__()
        self.nc, self.no = nc, nc + REG_MAX * 4
        c2, c3 = max(16, channels[0] // 4, REG_MAX * 4), max(channels[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * REG_MAX, 1))
                                 for c in channels)
        if v11:
            self.cv3 = nn.ModuleList(nn.Sequential(nn.Sequential(Conv(c, c, 3, g=c), Conv(c, c3, 1)),
                                                   nn.Sequential(Conv(c3, c3, 3, g=c3), Conv(c3, c3, 1)),
                                                   nn.Conv2d(c3, nc, 1)) for c in channels)
        else:
            self.cv3 = nn.ModuleList(nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1))
                                     for c in channels)
        self.dfl = DFL()
        self.raw = False  # training: the per-level maps, for the loss

    def bias_init(self):
        for a, b, s in zip(self.cv2, self.cv3, STRIDES):
            a[-1].bias.data[:] = 1.0
            b[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)

    def forward(self, feats):
        x = [torch.cat((a(f), b(f)), 1) for f, a, b in zip(feats, self.cv2, self.cv3)]
        if self.raw:
            return x
        b = x[0].shape[0]
        cat = torch.cat([xi.view(b, self.no, -1) for xi in x], 2)
        anchors, strides = (t.transpose(0, 1) for t in make_anchors(x, STRIDES, 0.5))
        box, cls = cat.split((REG_MAX * 4, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = anchors.unsqueeze(0) - lt, anchors.unsqueeze(0) + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class DetectV5(nn.Module):
    """Ultralytics' YOLOv5 Detect: three anchors a cell, sigmoid on everything, xy = (2s - 0.5 + grid) * stride,
    wh = (2s)^2 * anchor."""

    def __init__(self, nc, channels, size):
        super().__init__()
        self.nc, self.no, self.na = nc, nc + 5, 3
        scale = size / 640
        self.register_buffer("anchors", torch.tensor(V5_ANCHORS, dtype=torch.float).view(3, 3, 2) * scale)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in channels)
        self.raw = False

    def bias_init(self):
        for conv, s in zip(self.m, STRIDES):
            b = conv.bias.view(self.na, -1)
            b.data[:, 4] += math.log(8 / (640 / s) ** 2)
            b.data[:, 5:] += math.log(0.6 / (self.nc - 0.99999))

    def forward(self, feats):
        out, raw = [], []
        for i, f in enumerate(feats):
            x = self.m[i](f)
            bs, _, ny, nx = x.shape
            x = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            raw.append(x)
            yv, xv = torch.meshgrid(torch.arange(ny, dtype=x.dtype), torch.arange(nx, dtype=x.dtype), indexing="ij")
            grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2) - 0.5
            anchor_grid = self.anchors[i].view(1, self.na, 1, 1, 2)
            xy, wh, conf = x.sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 + grid) * STRIDES[i]
            wh = (wh * 2) ** 2 * anchor_grid
            out.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
        return raw if self.raw else torch.cat(out, 1)


class DetectX(nn.Module):
    """YOLOX's decoupled head: per level a stem, then box (4) and objectness (1) from one branch, classes from the
    other; outputs (1, N, 5 + C) with objectness and classes after a sigmoid."""

    def __init__(self, nc, channels, decode=True, width=32):
        super().__init__()
        self.nc, self.decode = nc, decode
        self.stems = nn.ModuleList(Conv(c, width, 1) for c in channels)
        self.cls_convs = nn.ModuleList(nn.Sequential(Conv(width, width, 3), Conv(width, width, 3)) for _ in channels)
        self.reg_convs = nn.ModuleList(nn.Sequential(Conv(width, width, 3), Conv(width, width, 3)) for _ in channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(width, nc, 1) for _ in channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(width, 4, 1) for _ in channels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(width, 1, 1) for _ in channels)
        self.raw = False

    def bias_init(self):
        for conv in list(self.cls_preds) + list(self.obj_preds):
            conv.bias.data.fill_(-math.log((1 - 0.01) / 0.01))

    def forward(self, feats):
        outs = []
        for i, f in enumerate(feats):
            x = self.stems[i](f)
            c, r = self.cls_convs[i](x), self.reg_convs[i](x)
            reg, obj, cls = self.reg_preds[i](r), self.obj_preds[i](r), self.cls_preds[i](c)
            outs.append(torch.cat((reg, obj, cls), 1) if self.raw else torch.cat((reg, obj.sigmoid(), cls.sigmoid()), 1))
        if self.raw:
            return outs
        hw = [o.shape[-2:] for o in outs]
        out = torch.cat([o.flatten(start_dim=2) for o in outs], 2).permute(0, 2, 1)
        if not self.decode:
            return out
        grids, strides = [], []
        for (h, w), s in zip(hw, STRIDES):
            yv, xv = torch.meshgrid(torch.arange(h, dtype=out.dtype), torch.arange(w, dtype=out.dtype), indexing="ij")
            grids.append(torch.stack((xv, yv), 2).view(1, -1, 2))
            strides.append(torch.full((1, h * w, 1), s, dtype=out.dtype))
        grids, strides = torch.cat(grids, 1), torch.cat(strides, 1)
        return torch.cat(((out[..., :2] + grids) * strides, torch.exp(out[..., 2:4]) * strides, out[..., 4:]), -1)


class Detector(nn.Module):
    def __init__(self, family: str, nc: int = 3, size: int = 160, width: int = 16):
        super().__init__()
        self.family = family
        self.body = Body(width)
        channels = self.body.channels
        if family in ("yolov8", "yolo11"):
            self.head = DetectV8(nc, channels, v11=family == "yolo11")
        elif family == "yolov5":
            self.head = DetectV5(nc, channels, size)
        elif family in ("yolox", "yolox-raw"):
            self.head = DetectX(nc, channels, decode=family == "yolox")
        else:
            raise ValueError(f"unknown family {family}")
        self.head.bias_init()

    def forward(self, images):
        return self.head(self.body(images))


FAMILIES = ("yolov5", "yolov8", "yolo11", "yolox", "yolox-raw")
