"""Proxy-task evaluation of many CNN cells at once: one stacked network per group of candidates.

:class:`BatchedCNNEvaluator` gives the same results as :class:`CNNProxyEvaluator` (same initial
weights and data order per seed, within floating-point tolerance) but trains candidates that
share their node ops together in one :class:`~autoshrink.nn.batched.BatchedCNN` -- on a GPU,
K small networks in the time of a few. A group of one (step 1's complete cell) trains on CUDA
as a stack of one replayed from CUDA graphs, which is faster than the plain loop
(benchmarks/README.md); without graphs the plain loop is the faster of the two (on an H200, the
complete cell at 1x28x28: 7,760 against 3,400-4,700 img/s), and a group of one goes there.
Grouping, ``evaluate_iter``/``evaluate_many`` and the retries in halves of a group that
fails come from :class:`~autoshrink.evaluators.stacking.StackedEvaluation`; candidates the
stacked network cannot build (other ops) are trained one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch

from autoshrink.data.images import ProxySplit
from autoshrink.devices import is_cuda
from autoshrink.errors import ConfigError
from autoshrink.evaluators.base import Evaluation
from autoshrink.evaluators.cnn_proxy import CNNProxyEvaluator
from autoshrink.evaluators.stacking import StackedEvaluation, check_cuda_graph
from autoshrink.graph import Cell
from autoshrink.nn.batched import BatchedCNN, build_batched, union_cell, widest_widths
from autoshrink.nn.node_states import check_node_inputs
from autoshrink.nn.stacked_ops import BATCHED_OPS, check_bn, check_depthwise, require_triton
from autoshrink.spaces.macros import MacroSpec
from autoshrink.training.batched import check_compact_below, train_batched
from autoshrink.training.classification import TrainOutcome
from autoshrink.training.proxy_settings import ProxyTraining


class BatchedCNNEvaluator(StackedEvaluation, CNNProxyEvaluator):
    """Train candidate CNN cells on the proxy task, many at once; metrics as the proxy evaluator.

    Options (besides those of :class:`CNNProxyEvaluator`):
        max_batch: most candidates trained together (``None``: all that share their ops).
        fixed_structure: build the complete cell at its widest for every group, so that the
            network's structure never changes between steps (for graph capture/compilation);
            default: the union of the group's edges, which is smaller.
        bf16: bfloat16 autocast for forward passes (faster on GPUs, not bit-equivalent).
        tf32: CUDA float32 matmuls on TF32 tensor cores, as the one-by-one loop's cuDNN
            convolutions by default (no effect on the CPU or in float64).
        cuda_graph: replay each training step from a CUDA graph (CUDA only; see
            :mod:`autoshrink.training.cuda_graph`); ``None`` (the default): on CUDA devices for
            a stack of one only (a single candidate, trained that way instead of in the plain
            loop), off for larger stacks, where graphs gained nothing in float32 on an H200.
        compact_below: stopped candidates leave the stacks once at most this fraction of
            them still train (1.0: at every stop; see :func:`train_batched`).
        depthwise: the CUDA kernels of the depthwise 3x3 convolutions (``auto``, ``triton``,
            ``torch`` or ``cudnn``; see :func:`autoshrink.nn.stacked_ops.depthwise3x3`).
        bn: batch norm + activation kernels (``torch``, the default; ``triton``: fused, less
            memory, slower; see :data:`autoshrink.nn.stacked_ops.BN_BACKENDS`).
        node_inputs: how nodes read their predecessors' outputs (``auto``: views of one buffer
            on CUDA; ``buffer``; ``concat``; see :mod:`autoshrink.nn.node_states`).
    """

    def __init__(
        self,
        split: ProxySplit,
        macro: MacroSpec,
        training: ProxyTraining,
        *,
        device: str = "cpu",
        threads: int | None = None,
        max_batch: int | None = None,
        fixed_structure: bool = False,
        bf16: bool = False,
        tf32: bool = True,
        cuda_graph: bool | None = None,
        compact_below: float = 0.5,
        depthwise: str = "auto",
        bn: str = "torch",
        node_inputs: str = "auto",
    ) -> None:
        super().__init__(split, macro, training, device=device, threads=threads)
        if max_batch is not None and max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        check_compact_below(compact_below)  # here, not at the first group: fail at once
        check_cuda_graph(cuda_graph, device)
        check_depthwise(depthwise)
        if depthwise == "triton" and is_cuda(device):  # the CPU runs one kernel, Triton or not
            require_triton("depthwise backend 'triton'")
        check_bn(bn)
        check_node_inputs(node_inputs)
        self.max_batch = max_batch
        self.fixed_structure = fixed_structure
        self.bf16 = bf16
        self.tf32 = tf32
        self.cuda_graph = bool(cuda_graph)
        self.single_graph = is_cuda(device) if cuda_graph is None else cuda_graph
        self.compact_below = compact_below
        self.depthwise = depthwise
        self.bn = bn
        self.node_inputs = node_inputs

    @classmethod
    def from_proxy(cls, evaluator: CNNProxyEvaluator, **options: Any) -> BatchedCNNEvaluator:
        """The batched twin of a one-by-one proxy evaluator (same data, macro and training)."""
        return cls(
            evaluator.split,
            evaluator.macro,
            evaluator.training,
            device=evaluator.device,
            threads=evaluator.threads,
            **options,
        )

    @property
    def stacks_single(self) -> bool:
        """Whether a single candidate trains as a stack of one replayed from CUDA graphs (see
        ``cuda_graph``) rather than in the plain loop."""
        return self.single_graph

    def _group_key(self, cell: Cell) -> Hashable | None:
        if cell.kind != "cnn" or not {cell.ops[j] for j in cell.live_nodes[1:]} <= set(BATCHED_OPS):
            return None
        return cell.ops, cell.activation

    def _alone(self, cell: Cell, seed: int) -> Evaluation:
        return CNNProxyEvaluator.evaluate(self, cell, seed)

    def _train(self, cells: list[Cell], seeds: list[int]) -> Iterator[tuple[int, TrainOutcome]]:
        first = cells[0]
        if self.fixed_structure:
            parent = Cell.complete(first.kind, first.ops, first.activation)
            widths = widest_widths(parent, self.macro)
        else:
            parent, widths = union_cell(cells), None
        engine = build_batched(
            parent,
            self.macro,
            cells,
            seeds,
            widths=widths,
            general=self.fixed_structure,
            depthwise=self.depthwise,
            bn=self.bn,
            node_inputs=self.node_inputs,
        ).to(self.device)
        yield from self._fit(engine, seeds)

    def _fit(
        self,
        engine: BatchedCNN,
        seeds: list[int],
        on_stop: Callable[[int, int], None] | None = None,
    ) -> Iterator[tuple[int, TrainOutcome]]:
        """Train the stacked ``engine`` with this evaluator's data and settings, candidate
        ``k``'s data order from ``seeds[k]`` (``on_stop``: see :func:`train_batched`)."""
        train, val = self._tensors()
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        yield from train_batched(
            engine,
            train,
            val,
            self.training,
            gens,
            bf16=self.bf16,
            tf32=self.tf32,
            cuda_graph=self.cuda_graph or (self.stacks_single and engine.k == 1),
            compact_below=self.compact_below,
            on_stop=on_stop,
        )

    def _evaluation(self, cell: Cell, out: TrainOutcome, t0: float, batch: int) -> Evaluation:
        accuracy = float("nan") if out.diverged else out.best_accuracy
        return self._finished(cell, self.profile(cell), accuracy, out, t0, batch=batch)
