"""The Single-Path superkernel: every choice of an inverted-residual layer in one set of weights.

A :class:`SuperMBConv` holds the largest choice (1x1 expansion to 6x the input channels, a 5x5
depthwise kernel, the linear projection). The 3x3 kernel is the centre of the 5x5 one, the
expansion-3 channels the first half of the expansion-6 ones. Learnable thresholds decide, with
indicator functions on the weights' norms (Stamoulis et al. 2019, eqs. 2-5):

- ``use_5x5 = 1[‖w_ring‖² > t_5x5]``: the ring of the 5x5 kernel outside its 3x3 centre;
  kernel = ``w_3x3 + use_5x5 · w_ring``;
- ``use_e3 = 1[‖w_half1‖² > t_e3]`` and ``use_e6 = 1[‖w_half2‖² > t_e6]`` on the two channel
  halves of that kernel: the depthwise output keeps the first half, and the second half when
  ``use_e6``; ``use_e3 = 0`` skips the layer (only where it is stride 1 with as many input as
  output channels: elsewhere ``use_e3`` is 1 and has no threshold).

``‖w‖²`` is taken as the mean of the squared weights of the group (the sum divided by the
number of weights it holds: the ring's 16 per channel; a channel half's 25 per channel with
the 5x5 kernel, 9 with the 3x3), so every threshold reads per weight and one scale fits every
layer and all three decisions; the forward decision is the paper's with its threshold scaled by
the group's size. Forward, the indicators are hard 0/1; backward, their gradient is the
sigmoid's of that per-weight argument (straight-through) -- not the paper's, whose sum is the
group's size times larger: at these norms (about 1e-2) the sigmoid's slope is close to its
0.25 everywhere, so the estimator is nearly a constant-slope straight-through one. Both the
thresholds and the weights learn from the loss and from the latency term.

The channel masks are applied to the depthwise output after its batch norm and ReLU6, and the
block's output is ``x + use_e3 · project(...)`` where it may skip: under any hard decision the
layer computes exactly what the plain :class:`~autoshrink.nn.mobilenetv2.InvertedResidual` of
that choice computes with the corresponding slice of the weights (:meth:`SuperMBConv.to_plain`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from autoshrink.cost.mobilenetv2 import MobileNetV2Spec
from autoshrink.nn.mobilenetv2 import InvertedResidual
from autoshrink.nn.ops import conv_bn
from autoshrink.singlepath.space import SKIP, LayerSlot, MBConvArch, macro_slots

THRESHOLD_NAMES = ("t_5x5", "t_e3", "t_e6")
#: Weights per channel of the 5x5 kernel's ring (outside its 3x3 centre), and of each kernel.
RING_WEIGHTS = 16
KERNEL_WEIGHTS = {3: 9, 5: 25}


def indicator(x: torch.Tensor) -> torch.Tensor:
    """``1[x > 0]`` forward, the gradient of ``sigmoid(x)`` backward (straight-through)."""
    soft = torch.sigmoid(x)
    return (x > 0).to(x.dtype) + soft - soft.detach()


@dataclass(frozen=True)
class Decision:
    """The hard decision of one superkernel, and the choice it names."""

    use_5x5: bool
    use_e3: bool
    use_e6: bool

    @property
    def choice(self) -> str:
        """The choice named: ``skip`` without ``use_e3``, else kernel and expansion (``k5e3``)."""
        if not self.use_e3:
            return SKIP
        return f"k{5 if self.use_5x5 else 3}e{6 if self.use_e6 else 3}"


class SuperMBConv(nn.Module):
    """One searchable layer: ``[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]``."""

    ring_mask: torch.Tensor  # buffer

    def __init__(self, slot: LayerSlot) -> None:
        super().__init__()
        self.slot = slot
        c, hidden = slot.in_channels, 6 * slot.in_channels
        self.half_channels = 3 * slot.in_channels
        self.expand = nn.Sequential(*conv_bn(c, hidden, 1), nn.ReLU6())
        self.depthwise = nn.Conv2d(hidden, hidden, 5, slot.stride, 2, groups=hidden, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(hidden)
        self.project = nn.Sequential(*conv_bn(hidden, slot.out_channels, 1))
        ring = torch.ones(1, 1, 5, 5)
        ring[..., 1:4, 1:4] = 0
        self.register_buffer("ring_mask", ring, persistent=False)
        self.t_5x5 = nn.Parameter(torch.zeros(()))
        self.t_e6 = nn.Parameter(torch.zeros(()))
        # a layer that may not skip has no e3 threshold: use_e3 is 1
        self.t_e3 = nn.Parameter(torch.zeros(())) if slot.skippable else None

    # ------------------------------------------------------------------ decisions
    def indicators(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(use_5x5, use_e3, use_e6, kernel)``: the three indicators (0-dim tensors,
        straight-through) and the depthwise kernel they select."""
        _, use_5x5, kernel, half1, half2 = self._norms()
        use_e6 = indicator(half2 - self.t_e6)
        if self.t_e3 is None:
            use_e3 = torch.ones((), dtype=kernel.dtype, device=kernel.device)
        else:
            use_e3 = indicator(half1 - self.t_e3)
        return use_5x5, use_e3, use_e6, kernel

    def _norms(self) -> tuple[torch.Tensor, ...]:
        """``(ring, use_5x5, kernel, half1, half2)``: the ring's per-weight squared norm, the
        5x5 indicator it decides, the kernel that indicator selects, and the per-weight squared
        norms of that kernel's two channel halves (over the weights of the kernel in use)."""
        w = self.depthwise.weight  # [6C, 1, 5, 5]
        ring = w * self.ring_mask
        ring_norm = ring.pow(2).sum() / (RING_WEIGHTS * w.shape[0])
        use_5x5 = indicator(ring_norm - self.t_5x5)
        kernel = (w - ring) + use_5x5 * ring
        k3, k5 = KERNEL_WEIGHTS[3], KERNEL_WEIGHTS[5]  # per channel, by the hard decision
        size = self.half_channels * (k3 + (k5 - k3) * (use_5x5.detach() > 0.5))
        half1 = kernel[: self.half_channels].pow(2).sum() / size
        half2 = kernel[self.half_channels :].pow(2).sum() / size
        return ring_norm, use_5x5, kernel, half1, half2

    def decision(self) -> Decision:
        """The current hard decision."""
        with torch.no_grad():
            k5, e3, e6, _ = self.indicators()
        return Decision(bool(k5 > 0.5), bool(e3 > 0.5), bool(e6 > 0.5))

    def thresholds(self) -> dict[str, float]:
        """The thresholds by name: ``t_5x5``, ``t_e6``, and ``t_e3`` if the layer can skip."""
        return {
            n: float(getattr(self, n).detach())
            for n in THRESHOLD_NAMES
            if getattr(self, n) is not None
        }

    def norms(self) -> dict[str, float]:
        """The per-weight squared norms the thresholds are compared with."""
        with torch.no_grad():
            ring, _, _, half1, half2 = self._norms()
        return {"ring": float(ring), "half1": float(half1), "half2": float(half2)}

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C_in, H, W]`` -> ``[B, C_out, H / stride, W / stride]`` under the current
        indicators: the depthwise kernel they select, the second channel half kept by ``use_e6``,
        and ``x + use_e3 · y`` where the layer may skip."""
        use_5x5, use_e3, use_e6, kernel = self.indicators()
        del use_5x5  # already in the kernel
        h = self.expand(x)  # [B, 6C, H, W]
        h = F.conv2d(h, kernel, stride=self.slot.stride, padding=2, groups=kernel.shape[0])
        h = F.relu6(self.depthwise_bn(h))
        half = self.half_channels
        mask = torch.cat([torch.ones_like(use_e6).expand(half), use_e6.expand(half)])
        y = self.project(h * mask.view(1, -1, 1, 1))
        return x + use_e3 * y if self.slot.skippable else y

    # ------------------------------------------------------------------ derivation
    def to_plain(self, choice: str) -> nn.Module:
        """The plain layer of ``choice`` (``skip``: an identity) with this layer's weights:
        the same outputs as this superkernel under that decision (in eval mode)."""
        if choice == SKIP:
            return nn.Identity()
        block = InvertedResidual(self.slot.placement(choice))
        k, e = int(choice[1]), int(choice[3])
        n = e * self.slot.in_channels
        src = {
            "body.0": (self.expand[0], slice(0, n)),
            "body.1": (self.expand[1], slice(0, n)),
            "body.4": (self.depthwise_bn, slice(0, n)),
            "body.7": (self.project[1], slice(None)),
        }
        plain = dict(block.named_modules())
        with torch.no_grad():
            for name, (module, rows) in src.items():
                copy_rows(module, plain[name], rows)
            off = (5 - k) // 2
            plain["body.3"].weight.copy_(self.depthwise.weight[:n, :, off : off + k, off : off + k])
            project_conv = cast(nn.Conv2d, self.project[0])
            plain["body.6"].weight.copy_(project_conv.weight[:, :n])
        return block


def copy_rows(src: nn.Module, dst: nn.Module, rows: slice) -> None:
    """Copy the leading ``rows`` of every parameter and buffer of ``src`` (a conv or a batch
    norm) into ``dst``."""
    own = dict(src.named_parameters()) | dict(src.named_buffers())
    for name, t in list(dst.named_parameters()) + list(dst.named_buffers()):
        s = own[name]
        t.copy_(s if s.dim() == 0 else s[rows])


class SuperNet(nn.Module):
    """MobileNetV2's macro with a :class:`SuperMBConv` per searchable layer; module names
    follow :class:`~autoshrink.nn.mobilenetv2.MobileNetV2`'s for stem, head and classifier."""

    def __init__(self, spec: MobileNetV2Spec, dropout: float = 0.2) -> None:
        super().__init__()
        self.spec = spec
        first, slots = macro_slots(spec)
        self.stem = nn.Sequential(
            *conv_bn(spec.in_channels, spec.stem_channels, 3, stride=2), nn.ReLU6()
        )
        self.first = InvertedResidual(first)
        self.layers = nn.ModuleList(SuperMBConv(s) for s in slots)
        self.head = nn.Sequential(
            *conv_bn(slots[-1].out_channels, spec.last_channels, 1), nn.ReLU6()
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(spec.last_channels, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``x [B, in_channels, S, S]`` -> logits ``[B, num_classes]``: stem, fixed first
        block, the superkernels, head, global average pool, dropout, classifier."""
        x = self.first(self.stem(x))
        for layer in self.layers:
            x = layer(x)
        x = self.head(x)  # [B, C, H/32, W/32]
        return self.classifier(self.dropout(x.mean(dim=(2, 3))))  # [B, classes]

    @property
    def super_layers(self) -> list[SuperMBConv]:
        """The searchable layers (:attr:`layers`), typed."""
        return list(cast(Iterable[SuperMBConv], self.layers))

    def threshold_parameters(self) -> list[nn.Parameter]:
        """The thresholds of every layer (the parameters named ``t_*``)."""
        return [p for n, p in self.named_parameters() if n.rsplit(".", 1)[-1].startswith("t_")]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the thresholds: the network's weights."""
        ids = {id(p) for p in self.threshold_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def decisions(self) -> list[Decision]:
        """The current hard :class:`Decision` of every searchable layer, in order."""
        return [layer.decision() for layer in self.super_layers]

    def derive(self) -> MBConvArch:
        """The discrete architecture of the current decisions."""
        s = self.spec
        return MBConvArch(
            width=s.width,
            image_size=s.image_size,
            num_classes=s.num_classes,
            in_channels=s.in_channels,
            layers=tuple(d.choice for d in self.decisions()),
        )

    def derived_network(self) -> nn.Module:
        """The derived network (:func:`~autoshrink.singlepath.space.build_arch`) carrying this
        supernet's weights: the same outputs as the supernet (eval mode)."""
        from autoshrink.singlepath.space import build_arch

        arch = self.derive()
        net = build_arch(arch, dropout=self.dropout.p)
        plain = [layer.to_plain(c) for layer, c in zip(self.super_layers, arch.layers, strict=True)]
        kept = [self.first] + [p for p in plain if not isinstance(p, nn.Identity)]
        with torch.no_grad():
            for name in ("stem", "head", "classifier"):
                getattr(net, name).load_state_dict(getattr(self, name).state_dict())
            for dst, src in zip(net.blocks, kept, strict=True):
                dst.load_state_dict(src.state_dict())
        return net
