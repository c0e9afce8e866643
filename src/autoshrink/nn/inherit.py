"""Weight inheritance: cut a trained CNN network of cell ``C`` down to a sub-cell ``C'``.

``C'`` is ``C`` with edges removed (and the nodes this cuts off dropped), as
:meth:`~autoshrink.graph.Cell.remove_edge` makes it. :func:`inherit_cnn` builds the network of
``C'`` on the same macro and fills it from ``C``'s trained network:

- every tensor with a counterpart is copied (batch-norm statistics included); the first
  channel-mixing convolution of a node keeps only the input-channel slices of the predecessors
  it still has (a node reads the concatenation of its predecessors, ascending, see
  :mod:`autoshrink.nn.cnn`), and a depthwise convolution and batch norm ahead of it keep the
  same channels;
- channels with no counterpart in ``C``'s network (a node that becomes a leaf widens the cell
  output, hence the next cell's input) are read with zero weights, so they add nothing until
  fine-tuning moves them; a residual projection or 1x1 adapter that ``C`` did not need is set
  to pass its input through (a channel-selection matrix, batch norm set to the identity);
- the weights of nodes that became unreachable, and of inputs that no longer exist, are dropped.

So when ``C``'s weights on the removed edge's input slice are zero and the edit changes no
leaf, ``C'`` computes exactly what ``C`` computes. Tensors are followed by a map from each
channel of ``C'`` to its channel in ``C`` (``None``: new), carried through the network.

RNN cells (:func:`inherit_rnn`) are simpler: each edge ``i -> j`` has its own matrix
``W_ij``, so ``C'``'s language model takes ``W0``, the embedding / tied decoder and the
matrices of the edges it keeps; a node now averages fewer incoming edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autoshrink.cost.cells import CellPlacement, node_channels, plan
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.nn.cnn import CNNCell, CNNNetwork, build_network
from autoshrink.nn.rnn import RNNModel
from autoshrink.spaces.macros import MacroSpec

ChannelMap = list[int | None]  # channel of the new network -> channel of the old one, or None


@dataclass(frozen=True)
class Inheritance:
    """What :func:`inherit_cnn` did: tensors copied (possibly sliced) and tensors it had to set."""

    copied: int
    set_new: int


def check_subcell(parent: Cell, child: Cell) -> None:
    """Raise :class:`ConfigError` unless ``child`` is ``parent`` with edges removed."""
    if (
        parent.kind != child.kind
        or parent.ops != child.ops
        or parent.activation != (child.activation)
    ):
        raise ConfigError("weight inheritance needs the same kind, ops and activation")
    if not set(child.edges) <= set(parent.edges):
        extra = sorted(set(child.edges) - set(parent.edges))
        raise ConfigError(f"cell has edge {extra[0]} that the trained cell lacks")


def _offsets(cell: Cell, node: int, ch: dict[int, int]) -> dict[int, int]:
    """Offset of each predecessor of ``node`` in the concatenation that ``node`` reads."""
    out, at = {}, 0
    for p in cell.predecessors(node):
        out[p] = at
        at += ch[p]
    return out


def _leaf_offsets(cell: Cell, ch: dict[int, int]) -> dict[int, int]:
    out, at = {}, 0
    for k in cell.leaves:
        out[k] = at
        at += ch[k]
    return out


def _shift(m: ChannelMap, offset: int) -> ChannelMap:
    return [None if c is None else c + offset for c in m]


class _Copier:
    """Fills ``child`` tensors from ``parent`` tensors along channel maps, counting what it does."""

    def __init__(self) -> None:
        self.copied = 0
        self.set_new = 0

    @torch.no_grad()
    def take(self, dst: torch.Tensor, src: torch.Tensor, maps: dict[int, ChannelMap]) -> None:
        """``dst[i...] = src[map[i]...]`` along each mapped dimension; positions that map to
        ``None`` keep ``dst``'s value."""
        if not maps:
            if dst.shape != src.shape:
                raise ConfigError(f"shape {tuple(dst.shape)} != trained {tuple(src.shape)}")
            dst.copy_(src)
            self.copied += 1
            return
        index = [torch.arange(n) for n in dst.shape]
        keep = torch.ones(dst.shape, dtype=torch.bool)
        for dim, m in maps.items():
            known = torch.tensor([c is not None for c in m])
            index[dim] = torch.tensor([0 if c is None else c for c in m])
            shape = [1] * dst.dim()
            shape[dim] = len(m)
            keep &= known.view(shape)
        gathered = src[torch.meshgrid(*index, indexing="ij")]
        dst.copy_(torch.where(keep, gathered.to(dst.dtype), dst))
        self.copied += 1

    @torch.no_grad()
    def zero_new(self, dst: torch.Tensor, dim: int, m: ChannelMap) -> None:
        """Zero the slices of ``dst`` along ``dim`` whose channels are new (``None``)."""
        new = [i for i, c in enumerate(m) if c is None]
        if new:
            dst.index_fill_(dim, torch.tensor(new), 0.0)
            self.set_new += 1

    @torch.no_grad()
    def selection(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, out: ChannelMap, inp: ChannelMap):
        """Set a 1x1 conv + BN that did not exist to pass channels through: output ``o`` is
        input ``i`` when both map to the same old channel."""
        w = torch.zeros_like(conv.weight)
        for o, co in enumerate(out):
            for i, ci in enumerate(inp):
                if co is not None and co == ci:
                    w[o, i, 0, 0] = 1.0
        if bn.running_mean is None or bn.running_var is None:
            raise ConfigError("cannot set a batch norm without running statistics")
        conv.weight.copy_(w)
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(var + eps) == x
        self.set_new += 1


def _convs_bns(module: nn.Module) -> list[nn.Conv2d | nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]


def _copy_module(cp: _Copier, dst: nn.Module, src: nn.Module) -> None:
    """Copy every parameter and buffer of ``src`` into ``dst`` (same shapes)."""
    s = src.state_dict()
    for name, t in dst.state_dict().items():
        cp.take(t, s[name], {})


def _inherit_op(cp: _Copier, dst: nn.Module, src: nn.Module, idx: ChannelMap, f: int) -> None:
    """Fill one node op: ``idx`` maps its input channels to the trained op's input channels.

    An op's last convolution mixes channels (a ``sep3x3``'s pointwise one); it and the modules
    ahead of it (a depthwise convolution and its batch norm) follow ``idx``, the modules after
    it are copied. Told by place, not by ``groups``: a depthwise convolution of one channel has
    ``groups == 1`` too. An adapter that only one side has is dropped or set to select.
    """
    d, s = _convs_bns(dst), _convs_bns(src)
    if not d:
        return  # identity / max-pool without adapter: nothing to fill
    if not s:  # a 1x1 adapter the trained op did not need: pass the inputs through
        conv, bn = d
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        cp.selection(conv, bn, list(range(f)), idx)
        return
    if len(d) != len(s):
        raise ConfigError("node op layouts differ between the trained and the cut network")
    mixer = max(i for i, m in enumerate(d) if isinstance(m, nn.Conv2d))
    for i, (dm, sm) in enumerate(zip(d, s, strict=True)):
        if i > mixer:
            _copy_module(cp, dm, sm)
            continue
        for name, t in dm.state_dict().items():
            src_t = sm.state_dict()[name]
            if name == "num_batches_tracked":
                cp.take(t, src_t, {})
            elif i == mixer:
                cp.take(t, src_t, {1: idx})
                cp.zero_new(t, 1, idx)
            else:  # depthwise conv or the batch norm after it: per input channel
                cp.take(t, src_t, {0: idx})


def _inherit_cell(
    cp: _Copier,
    dst: CNNCell,
    src: CNNCell,
    child: Cell,
    parent: Cell,
    in_map: ChannelMap,
    old_in: int,
    where: CellPlacement,
) -> ChannelMap:
    """Fill one cell placed at ``where``; ``in_map`` maps its input channels to those of the
    trained cell (``old_in`` of them). Returns the map of its output channels."""
    f = where.nodes
    ch_new = node_channels(child, where.in_channels, f)
    ch_old = node_channels(parent, old_in, f)
    node_map: dict[int, ChannelMap] = {0: in_map}
    node_map.update({k: list(range(f)) for k in child.live_nodes[1:]})
    for k in child.live_nodes[1:]:
        off = _offsets(parent, k, ch_old)
        idx: ChannelMap = []
        for p in child.predecessors(k):
            idx += _shift(node_map[p], off[p])
        _inherit_op(cp, dst.ops[str(k)], src.ops[str(k)], idx, f)
    old_leaves = _leaf_offsets(parent, ch_old)
    out_map: ChannelMap = []
    for k in child.leaves:
        if k in old_leaves:
            out_map += _shift(node_map[k], old_leaves[k])
        else:
            out_map += [None] * ch_new[k]
    d, s = _convs_bns(dst.shortcut), _convs_bns(src.shortcut)
    if d and s:
        conv, bn = d
        cp.take(conv.weight, s[0].weight, {0: out_map, 1: in_map})
        cp.zero_new(conv.weight, 1, in_map)
        for name, t in bn.state_dict().items():
            cp.take(
                t, s[1].state_dict()[name], {} if name == "num_batches_tracked" else {0: out_map}
            )
    elif d:  # the trained cell had an identity shortcut (same channels in and out)
        conv, bn = d
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        cp.selection(conv, bn, out_map, in_map)
    return out_map


def inherit_cnn(
    trained: CNNNetwork, parent: Cell, child: Cell, spec: MacroSpec
) -> tuple[CNNNetwork, Inheritance]:
    """The network of ``child`` on ``spec`` with ``trained``'s weights (``parent``'s network)
    cut down to it, on ``trained``'s device and dtype. Tensors without a counterpart keep the
    fresh initialisation drawn from torch's global generator (seed it first)."""
    check_subcell(parent, child)
    ref = next(trained.parameters())
    net = build_network(child, spec).to(device=ref.device, dtype=ref.dtype)
    cp = _Copier()
    _copy_module(cp, net.stem, trained.stem)
    in_map: ChannelMap = list(range(spec.stem_channels))
    for dst, src, new, old in zip(
        net.cells, trained.cells, plan(child, spec), plan(parent, spec), strict=True
    ):
        assert isinstance(dst, CNNCell) and isinstance(src, CNNCell)
        in_map = _inherit_cell(cp, dst, src, child, parent, in_map, old.in_channels, new)
    if _convs_bns(net.head):
        conv, bn = _convs_bns(net.head)
        sc, sb = _convs_bns(trained.head)
        cp.take(conv.weight, sc.weight, {1: in_map})
        cp.zero_new(conv.weight, 1, in_map)
        _copy_module(cp, bn, sb)
    else:
        cp.take(net.classifier.weight, trained.classifier.weight, {1: in_map})
        cp.zero_new(net.classifier.weight, 1, in_map)
        cp.take(net.classifier.bias, trained.classifier.bias, {})
    if _convs_bns(net.head):
        _copy_module(cp, net.classifier, trained.classifier)
    return net, Inheritance(cp.copied, cp.set_new)


def inherit_rnn(trained: RNNModel, parent: Cell, child: Cell) -> tuple[RNNModel, Inheritance]:
    """The language model of ``child`` with ``trained``'s tensors (``parent``'s model): the
    edge matrices of the edges ``child`` keeps, ``W0``, the embedding and the decoder."""
    check_subcell(parent, child)
    ref = trained.encoder.weight
    net = RNNModel(
        child, trained.ntoken, emsize=trained.emsize, nhid=trained.nhid, dropouts=trained.dropouts
    ).to(device=ref.device, dtype=ref.dtype)
    src = trained.state_dict()
    cp = _Copier()
    for name, t in net.state_dict().items():
        cp.take(t, src[name], {})
    return net, Inheritance(cp.copied, cp.set_new)
