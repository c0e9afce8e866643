"""The standalone ``model.py`` of an export: one readable PyTorch file for the network.

:func:`standalone_source` writes it for a cell and macro: the op factories the cell uses, a
``Cell`` module whose ``forward`` spells out the node wiring (channel concatenations of each
node's predecessors, the leaves, the residual) and the ``Network`` of the macro.
:func:`mbconv_source` writes it for an architecture of the inverted-residual space
(:mod:`autoshrink.singlepath.space`): an ``InvertedResidual`` module, the list of blocks that
run (each searchable layer's kernel and expansion; skipped layers have none) and the
``Network``. Both files share the frame (``_module_file``): the constants, ``conv_bn``, a
small safetensors reader and ``load(path)``. A file imports only ``torch`` and the standard
library, and its modules have the attribute names of autoshrink's own network
(:mod:`autoshrink.nn.cnn`, :mod:`autoshrink.nn.mobilenetv2`), so one weights file fits both.
"""

from __future__ import annotations

import textwrap

from autoshrink.cost.mobilenetv2 import BlockPlacement
from autoshrink.graph import Cell, check_kind
from autoshrink.singlepath.space import DROPOUT, SKIP, MBConvArch, macro_slots
from autoshrink.spaces.macros import MacroSpec

_OPS = {
    "sep3x3": '''def sep3x3(c_in, c_out, linear):
    """Depthwise 3x3 -> BN -> act -> pointwise 1x1 -> BN (-> act unless a leaf)."""
    layers = [*conv_bn(c_in, c_in, 3, groups=c_in), act(), *conv_bn(c_in, c_out, 1)]
    return nn.Sequential(*layers, *([] if linear else [act()]))
''',
    "conv1x1": '''def conv1x1(c_in, c_out, linear):
    """1x1 conv -> BN (-> act unless a leaf)."""
    return nn.Sequential(*conv_bn(c_in, c_out, 1), *([] if linear else [act()]))
''',
    "conv3x3": '''def conv3x3(c_in, c_out, linear):
    """3x3 conv -> BN (-> act unless a leaf)."""
    return nn.Sequential(*conv_bn(c_in, c_out, 3), *([] if linear else [act()]))
''',
    "maxpool3x3": '''def maxpool3x3(c_in, c_out, linear):
    """(1x1 conv -> BN when the channels change) -> 3x3 max-pool, stride 1."""
    adapter = [] if c_in == c_out else conv_bn(c_in, c_out, 1)
    return nn.Sequential(*adapter, nn.MaxPool2d(3, stride=1, padding=1))
''',
    "identity": '''def identity(c_in, c_out, linear):
    """The input itself (1x1 conv -> BN when the channels change)."""
    return nn.Sequential(*([] if c_in == c_out else conv_bn(c_in, c_out, 1)))
''',
}
_ACT = {"relu": "nn.ReLU()", "swish": "nn.SiLU()"}

_READER = '''def read_safetensors(path):
    """The tensors of a .safetensors file (a JSON header, then raw little-endian data)."""
    dtypes = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
              "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = bytearray(data[8 + n:])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = dtypes[info["dtype"]]
        flat = torch.frombuffer(body, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                offset=begin) if end > begin else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(info["shape"]).clone()
    return tensors
'''


def _channels(terms: list[str]) -> str:
    """``c_in + 2 * f`` from a list of ``c_in`` / ``f`` terms."""
    parts = []
    if "c_in" in terms:
        parts.append("c_in")
    n = terms.count("f")
    if n:
        parts.append("f" if n == 1 else f"{n} * f")
    return " + ".join(parts)


def _tensor(nodes: list[int]) -> str:
    names = [f"x{k}" for k in nodes]
    return names[0] if len(names) == 1 else f"torch.cat([{', '.join(names)}], 1)"


def _cell_source(cell: Cell) -> str:
    """The ``Cell`` class for this genotype: one line per node in ``__init__`` and ``forward``."""
    leaves = set(cell.leaves)
    term = {k: ("c_in" if k == 0 else "f") for k in cell.live_nodes}
    init, fwd = [], ["        x0 = x if self.pool is None else self.pool(x)  # [B, c_in, H', W']"]
    for k in cell.live_nodes[1:]:
        preds = list(cell.predecessors(k))
        c = _channels([term[p] for p in preds])
        leaf = "True" if k in leaves else "False"
        init.append(f'            "{k}": {cell.ops[k]}({c}, f, linear={leaf}),')
        fwd.append(f"        x{k} = self.ops[\"{k}\"]({_tensor(preds)})  # [B, f, H', W']")
    out_c = _channels([term[k] for k in cell.leaves])
    fwd.append(f"        y = {_tensor(list(cell.leaves))}  # [B, {out_c}, H', W']")
    fwd.append("        return y + self.shortcut(x)")
    wiring = "\n".join(
        f"        node {k} ({cell.ops[k]}) <- {list(cell.predecessors(k))}"
        for k in cell.live_nodes[1:]
    )
    return f'''class Cell(nn.Module):
    """The searched cell: [B, c_in, H, W] -> [B, {out_c}, H', W'].

    Node 0 is the input (after a 2x2 max-pool when the cell down-samples); every other node
    applies its op to the concatenation of its inputs:
{wiring}
    The output concatenates the leaves {list(cell.leaves)} and adds the (projected) input.
    """

    def __init__(self, c_in, f, downsample):
        super().__init__()
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True) if downsample else None
        self.ops = nn.ModuleDict({{
{chr(10).join(init)}
        }})
        self.out_channels = {out_c}
        project = downsample or c_in != self.out_channels
        stride = 2 if downsample else 1
        self.shortcut = (
            nn.Sequential(*conv_bn(c_in, self.out_channels, 1, stride=stride))
            if project else nn.Identity()
        )

    def forward(self, x):
{chr(10).join(fwd)}
'''


def _module_file(
    title: str, notes: str, shape: tuple[int, int, int], num_classes: int, constants: str, body: str
) -> str:
    """A standalone ``model.py``: docstring (``title``, the usage, ``notes``), imports, the input
    and output constants and ``constants``, ``conv_bn``, ``body`` (which defines ``Network``),
    the safetensors reader, ``load(path)`` and a ``__main__`` that runs one random image."""
    in_channels, size, _ = shape
    return f'''"""{title} in plain PyTorch (autoshrink export).

Needs only torch. Usage:

    from model import load
    model = load("model.safetensors")      # eval mode
    logits = model(images)                 # [B, C, H, W] -> [B, {num_classes}]

with {in_channels} x {size} x {size} images, normalised as in training: pixels scaled to [0, 1],
then per channel minus the mean and divided by the std that export.json (and the training's
metrics.json) record as "normalisation".

{notes}
"""

import json
import struct
from pathlib import Path

import torch
from torch import nn

IN_CHANNELS = {in_channels}
IMAGE_SIZE = {size}
NUM_CLASSES = {num_classes}
{constants}


def conv_bn(c_in, c_out, k, stride=1, groups=1):
    return [
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]


{body}


{_READER}

def load(path=Path(__file__).with_name("model.safetensors")):
    """The network with the weights of ``path``, in eval mode."""
    model = Network()
    model.load_state_dict(read_safetensors(path))
    return model.eval()


if __name__ == "__main__":
    import sys

    model = load(*sys.argv[1:2])
    with torch.inference_mode():
        y = model(torch.randn(1, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE))
    print("output", tuple(y.shape))
'''


def standalone_source(cell: Cell, spec: MacroSpec) -> str:
    """A self-contained PyTorch module file for the network ``spec`` built from ``cell``."""
    check_kind(cell, "cnn", "export")
    used = sorted({cell.ops[k] for k in cell.live_nodes[1:]})
    stages = "\n".join(f"    ({s.cells}, {s.channels}, {s.downsample})," for s in spec.stages)
    ops = "\n\n".join(_OPS[op] for op in used)
    notes = (
        f"Cell {cell.key}: ops {list(cell.ops)}, activation {cell.activation},\n"
        f"edges {[list(e) for e in cell.edges]}"
    )
    constants = f"""STEM_CHANNELS = {spec.stem_channels}
STEM_STRIDE = {spec.stem_stride}
# (cells, channels of each op node, whether the first cell down-samples)
STAGES = [
{stages}
]
HEAD_CHANNELS = {spec.head_channels}"""
    body = f'''def act():
    return {_ACT[cell.activation or "relu"]}


{ops}

{_cell_source(cell)}

class Network(nn.Module):
    """Stem, the stages of cells, optional 1x1 head, global average pool, linear classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            *conv_bn(IN_CHANNELS, STEM_CHANNELS, 3, stride=STEM_STRIDE), act()
        )
        cells, c = [], STEM_CHANNELS
        for n, f, downsample in STAGES:
            for i in range(n):
                cells.append(Cell(c, f, downsample and i == 0))
                c = cells[-1].out_channels
        self.cells = nn.Sequential(*cells)
        if HEAD_CHANNELS is not None:
            self.head = nn.Sequential(*conv_bn(c, HEAD_CHANNELS, 1), act())
            c = HEAD_CHANNELS
        else:
            self.head = nn.Identity()
        self.classifier = nn.Linear(c, NUM_CLASSES)

    def forward(self, x):  # [B, IN_CHANNELS, H, W] -> [B, NUM_CLASSES]
        x = self.head(self.cells(self.stem(x)))
        return self.classifier(x.mean(dim=(2, 3)))'''
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    title = f"The {spec.name} network of cell {cell.key}"
    return _module_file(title, notes, shape, spec.num_classes, constants, body)


_MBCONV_BODY = '''class InvertedResidual(nn.Module):
    """[B, c_in, H, W] -> [B, c_out, H / stride, W / stride]: 1x1 expansion -> BN -> ReLU6 (when
    hidden != c_in), depthwise k x k -> BN -> ReLU6, linear 1x1 projection -> BN; plus the input
    when stride is 1 and c_in == c_out."""

    def __init__(self, c_in, hidden, c_out, kernel, stride):
        super().__init__()
        layers = []
        if hidden != c_in:
            layers += [*conv_bn(c_in, hidden, 1), nn.ReLU6()]
        layers += [
            *conv_bn(hidden, hidden, kernel, stride=stride, groups=hidden),
            nn.ReLU6(),
            *conv_bn(hidden, c_out, 1),  # linear bottleneck: no activation
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class Network(nn.Module):
    """Stem (3x3 conv, stride 2), the BLOCKS, 1x1 head, global average pool, dropout, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(IN_CHANNELS, STEM_CHANNELS, 3, stride=2), nn.ReLU6())
        self.blocks = nn.Sequential(*(InvertedResidual(*b) for b in BLOCKS))
        self.head = nn.Sequential(*conv_bn(BLOCKS[-1][2], HEAD_CHANNELS, 1), nn.ReLU6())
        self.dropout = nn.Dropout(DROPOUT)
        self.classifier = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def forward(self, x):  # [B, IN_CHANNELS, H, W] -> [B, NUM_CLASSES]
        x = self.head(self.blocks(self.stem(x)))  # [B, HEAD_CHANNELS, H / 32, W / 32]
        return self.classifier(self.dropout(x.mean(dim=(2, 3))))'''


def _block(b: BlockPlacement, what: str) -> str:
    return f"    ({b.in_channels}, {b.hidden}, {b.out_channels}, {b.kernel}, {b.stride}),  # {what}"


def mbconv_source(arch: MBConvArch) -> str:
    """A self-contained PyTorch module file for the network of ``arch`` (the state dict names
    of :func:`~autoshrink.singlepath.space.build_arch`): the fixed first block, then one block per
    searchable layer with its chosen kernel and expansion, skipped layers only a comment."""
    first, slots = macro_slots(arch.spec)
    blocks = [_block(first, "first block (fixed, no expansion)")]
    for slot, choice in zip(slots, arch.layers, strict=True):
        blocks.append(
            f"    # layer {slot.index}: skip"
            if choice == SKIP
            else _block(slot.placement(choice), f"layer {slot.index}: {choice}")
        )
    constants = f"""STEM_CHANNELS = {arch.spec.stem_channels}
HEAD_CHANNELS = {arch.spec.last_channels}
DROPOUT = {DROPOUT}  # before the classifier; active in training mode only
# The blocks that run, in order: (input channels, expanded channels, output channels,
# depthwise kernel, stride); a skipped layer has no block
BLOCKS = [
{chr(10).join(blocks)}
]"""
    title = f"A MobileNetV2-space network (width {arch.width:g})"
    notes = (
        f"{len(arch.plan())} blocks run: MobileNetV2's first block, then one per searchable layer "
        f"not skipped.\nThe {len(slots)} layers' choices (kKeE: depthwise kernel K, expansion E; "
        "skip: no block):\n" + textwrap.fill(", ".join(arch.layers), 96)
    )
    shape = (arch.in_channels, arch.image_size, arch.image_size)
    return _module_file(title, notes, shape, arch.num_classes, constants, _MBCONV_BODY)
