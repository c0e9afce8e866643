"""Typed, validated search settings and their JSON form (the presets: :mod:`autoshrink.presets`).

A :class:`SearchConfig` is everything a search needs to run again: it is saved as
``config.json`` in every run folder and read back by ``--resume``. Fields are keyword-only and
checked on construction; unknown keys in a file are an error, not silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

from autoshrink.atomic_write import write_json
from autoshrink.devices import check_threads, gpu_index
from autoshrink.errors import ConfigError
from autoshrink.graph import CNN_ACTIVATIONS
from autoshrink.hardware.latency_settings import LatencySettings
from autoshrink.json_values import as_read_back, not_json
from autoshrink.objectives import COSTS, LATENCY_COSTS, Score
from autoshrink.ranges import SEED, check_value
from autoshrink.screening import ScreeningStage, default_stages, stages_from_json
from autoshrink.spaces.macros import MACROS, check_width
from autoshrink.training.proxy_settings import OodSettings, ProxyTraining, RNNProxyTraining
from autoshrink.user_files import json_type_problem, read_json_file
from autoshrink.zero_cost import MIN_BATCH, check_proxy

TASKS = ("cnn", "rnn")
_Training = TypeVar("_Training", ProxyTraining, RNNProxyTraining)
#: ``autoshrink``: the method; ``random`` and ``rea``: baselines on the same cell space.
BUILT_IN_STRATEGIES = ("autoshrink", "random", "rea")
#: The built-in strategies, and ``custom``: one that ``run_search``'s ``strategy_factory`` makes.
STRATEGIES = (*BUILT_IN_STRATEGIES, "custom")
#: ``standalone``: every candidate trained from scratch; ``oneshot``: from the current cell's
#: trained weights (see :mod:`autoshrink.evaluators.oneshot`).
EVALUATORS = ("standalone", "oneshot")
TRAINING = MappingProxyType(
    {"cnn": ProxyTraining, "rnn": RNNProxyTraining}
)  # the proxy settings of each task
#: The most nodes a searched cell may have: the complete cell of N nodes has N(N-1)/2 edges and
#: the search about K candidates per edge (2,016 edges and ~20,000 candidates at 64; the paper
#: searches N = 8 and 6), so a larger N is taken for a typing slip.
MAX_NODES = 64
#: Settings that say where and how candidates run, not which ones a search asks for or what
#: they score: left out of :meth:`SearchConfig.fingerprint` (a data or table folder may move).
NOT_FINGERPRINTED = ("data_dir", "device", "threads", "latency_table", "execution")
#: How a step's candidates are chosen before training: ``none`` (K drawn uniformly, the
#: method), ``zero-cost`` (the whole shrink space ranked by ``zc_proxy``, the K best trained),
#: ``progressive`` (each batch screened on the easiest classes, :mod:`autoshrink.screening`).
SCREENINGS = ("none", "zero-cost", "progressive")
#: Settings left out of the fingerprint while they hold their default (added after run folders
#: were made without them, which must still resume).
OMITTED_AT_DEFAULT: Mapping[str, object] = MappingProxyType({"screening_stages": []})


class Constraints(dict[str, float]):
    """A search's hard limits (metric -> largest value), read-only as the config that holds
    them: make another config to change them (``preset(..., constraints={...})``,
    ``dataclasses.replace(config, constraints={...})``). A plain ``dict`` to everything that
    reads it (JSON, equality, pickling)."""

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            "a SearchConfig's constraints are read-only; make another config: "
            "preset(..., constraints={...}) or dataclasses.replace(config, constraints={...})"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self) -> tuple[type[Constraints], tuple[dict[str, float]]]:
        return (Constraints, (dict(self),))


@dataclass(frozen=True, kw_only=True)
class ExecutionSettings:
    """How a search runs its candidates, saved in ``config.json`` so that ``--resume`` rebuilds
    the executor the run was started with (a CUDA run resumes on the batched GPU executor, not on
    the CPU pool); left out of :meth:`SearchConfig.fingerprint`, and checked by
    :func:`autoshrink.executors.factory.build_executor`: ``executor`` (``None``: the device's
    default), pool ``workers``, ``ray_address``, the batched engine's ``precision``,
    ``cuda_graph`` (``None``: the engine's default, on CUDA on for stacked RNN candidates and
    for a CNN stack of one, off for larger CNN stacks) and ``depthwise`` backend, and
    ``candidate_timeout``: the seconds a candidate may train on the pool or Ray (``None``: no
    limit), which, like the worker count, says how candidates run, not which the search asks
    for."""

    executor: str | None = None
    workers: int | None = None
    ray_address: str | None = None
    precision: str | None = None
    cuda_graph: bool | None = None
    depthwise: str | None = None
    candidate_timeout: float | None = None


#: The metrics a constraint may bound, by task: what the task's evaluators profile before
#: training (:func:`autoshrink.search_records.violation`).
CONSTRAINED = MappingProxyType({"cnn": COSTS, "rnn": ("macs", "params", "edges", "edge_cost")})

#: Settings of CNN searches only: an rnn search refuses them off their defaults, since it
#: would save and ignore them.
CNN_ONLY = (
    *("activation", "per_class", "val_size", "width", "latency", "latency_macro"),
    *("latency_table", "zc_proxy", "zc_batch"),
)

#: The data set of an rnn search: text in Penn Treebank's layout (``train.txt``,
#: ``valid.txt``), read from ``data_dir``.
TEXT_DATASETS = ("ptb",)


def _field_default(name: str) -> Any:
    """The default of :class:`SearchConfig`'s field ``name`` (a new one of a factory's)."""
    f = SearchConfig.__dataclass_fields__[name]
    return f.default_factory() if callable(f.default_factory) else f.default


#: ``erm``: candidates trained on the training data (the paper); ``ood``: NAS-OoD's minimax.
OBJECTIVES = ("erm", "ood")


#: The fields of :class:`SearchConfig` that hold settings of their own (a JSON object in
#: ``config.json``) -> their class; ``training``, the task's, aside.
NESTED_SETTINGS: Mapping[str, type] = MappingProxyType(
    {"score": Score, "latency": LatencySettings, "execution": ExecutionSettings, "ood": OodSettings}
)


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Settings of one AutoShrink search (defaults: the paper's CNN protocol, method §2-§4)."""

    task: str = "cnn"
    strategy: str = "autoshrink"
    dataset: str = "cifar10"
    data_dir: str | None = None
    nodes: int = 8
    k: int = 10
    keep_fraction: float = 0.01
    patience: int | None = None
    score_start: bool = True
    # Baselines (strategy random / rea): candidates in all (None: default_budget), batches of k.
    budget: int | None = None
    population_size: int = 10
    tournament_size: int = 3
    activation: str = "relu"
    per_class: int = 500
    val_size: int = 1000
    width: float = 1.0
    training: ProxyTraining | RNNProxyTraining = field(default_factory=ProxyTraining)
    score: Score = field(default_factory=Score.cnn)
    constraints: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    # Latency cost terms / constraints (latency_ms, table_latency_ms): how to measure, which
    # registered macro to time (None: the proxy network), the latency table file to use/extend.
    latency: LatencySettings = field(default_factory=LatencySettings)
    latency_macro: str | None = None
    latency_table: str | None = None
    # How candidates run (executor and options): --resume rebuilds the same executor.
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
    # Candidate screening (docs/zero-cost.md): mode, proxy, and images in the proxy's batch.
    screening: str = "none"
    zc_proxy: str = "synflow"
    zc_batch: int = 64
    # Progressive screening's schedule (empty: default_stages of the proxy protocol's epochs).
    screening_stages: tuple[ScreeningStage, ...] = ()
    # One-shot evaluation (--evaluator oneshot): candidates fine-tuned from the current
    # cell's weights for oneshot_epochs epochs (0: batch-norm statistics only).
    evaluator: str = "standalone"
    oneshot_epochs: int = 1
    # Domain generalisation (docs/ood.md): the held-out domain of a multi-domain data set,
    # which the search never loads, and the proxy objective with its generator settings.
    test_domain: str | None = None
    objective: str = "erm"
    ood: OodSettings = field(default_factory=OodSettings)

    def __post_init__(self) -> None:
        # its own, read-only copy: a dict shared with the config it was replaced from (a
        # preset, say) would carry a change to one into every other, past the checks below;
        # one that is no mapping is left for _check_types to name
        if isinstance(self.constraints, Mapping):
            object.__setattr__(self, "constraints", Constraints(self.constraints))
        for name, kind in NESTED_SETTINGS.items():  # a dict passes the JSON types below
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise ConfigError(
                    f"{name} must be {kind.__name__}(...), got {type(value).__name__} (a "
                    "config.json's object is read with SearchConfig.from_dict)"
                )
        self._check_types()
        self._check_domains()
        self._check_strategy()
        self._check_sizes()
        if self.latency_macro is not None and self.latency_macro not in MACROS:
            raise ConfigError(
                f"unknown latency macro {self.latency_macro!r}; expected one of {sorted(MACROS)}"
            )
        if self.activation not in CNN_ACTIVATIONS:  # a resumed config.json's too, naming it
            raise ConfigError(
                f"unknown activation {self.activation!r}; expected one of {CNN_ACTIVATIONS}"
            )
        check_width(self.width)
        gpu_index(self.device)
        check_value("seed", self.seed, SEED)  # NumPy's generators take no negative seeds
        if self.threads is not None:
            check_threads(self.threads)
        self._check_constraints()
        self._check_screening()
        self._check_evaluator()
        self._check_training()
        self._check_dataset()
        if self.task == "rnn":
            self._check_rnn_settings()

    def _check_strategy(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.budget is not None and self.strategy == "autoshrink":
            raise ConfigError("budget is for the baselines (strategy random or rea) only")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"budget must be >= 1 candidate, got {self.budget}")
        for name in ("population_size", "tournament_size"):  # the one that is wrong, by name
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    def _check_sizes(self) -> None:
        """The cell's nodes, the search's K, keep fraction and patience, the proxy data's."""
        if not 2 <= self.nodes <= MAX_NODES:
            edges = self.nodes * (self.nodes - 1) // 2
            raise ConfigError(
                f"nodes must be in 2..{MAX_NODES}, got {self.nodes}"
                + (f" (a complete cell of {edges:,} edges)" if self.nodes > MAX_NODES else "")
            )
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if not 0.0 <= self.keep_fraction < 1.0:
            raise ConfigError(f"keep_fraction must be in [0, 1), got {self.keep_fraction}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be >= 1, got {self.patience}")
        if self.per_class < 1 or self.val_size < 1:
            raise ConfigError("per_class and val_size must be >= 1")

    def _check_constraints(self) -> None:
        for name, limit in self.constraints.items():
            if name not in CONSTRAINED[self.task]:  # a misspelt metric would be a no-op
                raise ConfigError(
                    f"unknown constraint {name!r} for task {self.task!r} (--task {self.task}); "
                    "expected one of "
                    f"{CONSTRAINED[self.task]}"
                )
            if not isinstance(limit, (int, float)) or not 0 < limit < math.inf:
                raise ConfigError(
                    f"constraint {name}: the limit must be a finite number > 0, got {limit}"
                )

    def _check_training(self) -> None:
        """The training settings are the task's kind (each kind checks its own values)."""
        t = self.training
        if not isinstance(t, TRAINING[self.task]):
            raise ConfigError(
                f"task {self.task!r} needs training={TRAINING[self.task].__name__}(...), "
                f"got {type(t).__name__}; start from preset(name, task={self.task!r})"
            )

    def _check_rnn_settings(self) -> None:
        """No CNN-only setting off its default; a keep fraction that leaves an edge to score."""
        if used := self._cnn_settings_given():
            raise ConfigError(
                f"{', '.join(used)}: settings of cnn searches only, which an rnn search would "
                "ignore; leave them at their defaults"
            )
        edges = self.nodes * (self.nodes - 1) // 2  # the complete cell's
        zero_edges = self.score.cost == "edge_cost" and self.score.weight  # params, macs: > 0
        if zero_edges and round(edges * self.keep_fraction) == 0:
            raise ConfigError(  # log10(E * nhid^2) of E = 0 edges: no score to rank it by
                f"keep_fraction {self.keep_fraction:g} shrinks the {self.nodes}-node rnn cell to "
                f"0 edges, which the score cannot rank (edge cost 0); use at least "
                f"{1 / edges:.3g}"  # 0.5 / edges rounds to 0 edges too (half to even)
            )

    def _check_dataset(self) -> None:
        from autoshrink.data.images import DATASETS

        known = TEXT_DATASETS if self.task == "rnn" else DATASETS
        # an rnn config made without a preset holds the field's default, which nothing of an
        # rnn search reads (and config.json files of such runs saved it): it stays valid
        unset = self.task == "rnn" and self.dataset == _field_default("dataset")
        if self.dataset not in known and not unset:
            raise ConfigError(
                f"unknown data set {self.dataset!r} for task {self.task!r} (--task {self.task}); "
                "expected one of "
                f"{list(known)}"
                + (f"; start from preset(name, task={self.task!r})" if self.task == "rnn" else "")
            )

    def _cnn_settings_given(self) -> list[str]:
        """The :data:`CNN_ONLY` settings that differ from their defaults."""
        return [name for name in CNN_ONLY if getattr(self, name) != _field_default(name)]

    def _check_screening(self) -> None:
        if self.screening not in SCREENINGS:
            raise ConfigError(
                f"unknown screening {self.screening!r}; expected one of {list(SCREENINGS)}"
            )
        check_proxy(self.zc_proxy)
        if self.zc_batch < MIN_BATCH:
            raise ConfigError(f"zc_batch must be >= {MIN_BATCH} images, got {self.zc_batch}")
        if self.screening_stages and self.screening != "progressive":
            raise ConfigError("screening_stages (--screening-stages) need --screening progressive")
        if self.screening == "progressive" and (self.task, self.objective) != ("cnn", "erm"):
            raise ConfigError(
                "screening 'progressive' screens CNN cells on classes of the erm proxy task; "
                f"not task {self.task!r} with objective {self.objective!r}"
            )
        if self.screening == "zero-cost" and (self.task, self.strategy) != ("cnn", "autoshrink"):
            raise ConfigError(
                "screening 'zero-cost' ranks AutoShrink's CNN shrink space; "
                f"it does not apply to task {self.task!r} with strategy {self.strategy!r}"
            )

    def _check_evaluator(self) -> None:
        if self.evaluator not in EVALUATORS:
            raise ConfigError(f"unknown evaluator {self.evaluator!r}; expected one of {EVALUATORS}")
        if self.oneshot_epochs < 0:
            raise ConfigError(f"oneshot_epochs must be >= 0, got {self.oneshot_epochs}")
        if self.evaluator == "oneshot" and self.strategy != "autoshrink":
            raise ConfigError(
                "evaluator oneshot needs strategy autoshrink (each candidate inherits its "
                f"parent's weights along the shrink trajectory), not {self.strategy!r}"
            )
        if self.evaluator == "oneshot" and not self.score_start:
            raise ConfigError(
                "evaluator oneshot needs score_start true: the complete cell is trained first "
                "and every candidate inherits from it"
            )
        if self.evaluator == "oneshot" and self.objective != "erm":
            raise ConfigError(
                f"evaluator oneshot fine-tunes with the erm objective; not with {self.objective!r}"
            )

    def _check_domains(self) -> None:
        from autoshrink.data.domains import check_test_domain

        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; expected one of {OBJECTIVES}")
        if self.task != "cnn" and (self.objective != "erm" or self.test_domain is not None):
            raise ConfigError(
                "objective 'ood' and test_domain (--objective ood, --test-domain) are for cnn "
                f"cells, not task {self.task!r} (--task {self.task})"
            )
        check_test_domain(self.dataset, self.test_domain)

    def default_budget(self) -> int:
        """The baselines' default budget: the most candidates AutoShrink can evaluate with
        these settings -- the start cell (when scored) and ``min(k, E)`` removals of a cell of
        ``E`` edges for every ``E`` from ``E0 = N(N-1)/2`` down to just above the edge target
        ``round(E0 * keep_fraction)`` (a step removes one edge at least, and a cell of ``E``
        edges has at most ``E`` single-edge removals). AutoShrink evaluates fewer when a
        removal prunes several edges, isomorphic removals merge or patience ends it; for an
        equal-budget comparison pass its count (``evaluations`` in ``result.json``)."""
        e0 = self.nodes * (self.nodes - 1) // 2
        target = round(e0 * self.keep_fraction)
        return int(self.score_start) + sum(min(self.k, e) for e in range(target + 1, e0 + 1))

    @property
    def cnn_training(self) -> ProxyTraining:
        """``training`` of a ``task="cnn"`` search, as its type."""
        return self._training_of("cnn", ProxyTraining)

    @property
    def rnn_training(self) -> RNNProxyTraining:
        """``training`` of a ``task="rnn"`` search, as its type."""
        return self._training_of("rnn", RNNProxyTraining)

    def _training_of(self, task: str, kind: type[_Training]) -> _Training:
        # __post_init__ made sure that training has the type TRAINING gives the task
        if self.task != task or not isinstance(self.training, kind):
            raise ConfigError(f"a task {self.task!r} search has no {kind.__name__} settings")
        return self.training

    def stages(self) -> tuple[ScreeningStage, ...]:
        """Progressive screening's schedule: ``screening_stages``, or the default one."""
        return self.screening_stages or default_stages(self.training.epochs)

    def search_settings(self) -> dict[str, Any]:
        """The settings that decide which candidates the search asks for and how they score:
        everything but :data:`NOT_FINGERPRINTED` (and :data:`OMITTED_AT_DEFAULT` at its
        default), as JSON values."""
        return {
            k: v
            for k, v in as_read_back(self.to_dict()).items()
            if k not in NOT_FINGERPRINTED and OMITTED_AT_DEFAULT.get(k, ...) != v
        }

    def fingerprint(self) -> str:
        """A SHA-256 of :meth:`search_settings` (canonical JSON): what a journal was made with."""
        text = json.dumps(self.search_settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Every setting, nested settings as dicts and tuples as lists: what ``config.json``
        holds, and :meth:`from_dict` reads back (a tuple was refused as no list)."""
        return json.loads(json.dumps(asdict(self)))

    def _check_types(self) -> None:
        """Raise :class:`ConfigError` naming the first setting whose value is not of its
        field's type (``k=2.5``, ``seed="a"``), as :meth:`check_json` does for a file."""
        try:
            as_json = self.to_dict()  # NumPy numbers refused
        except (TypeError, ValueError) as err:  # e.g. a NumPy number, a Path among the settings
            which = not_json(asdict(self)) or "a setting"
            raise ConfigError(
                f"config: {which} is not a plain JSON value ({err}); give a str, a number or "
                "a bool (str(path) for a path)"
            ) from None
        self.check_json(as_json)

    @classmethod
    def check_json(cls, d: Any, source: str = "config") -> None:
        """Raise a one-line :class:`ConfigError` naming ``source`` and the key when ``d`` is not
        a JSON object of settings: an unknown key, or a value whose JSON type does not fit its
        field's annotation -- nested settings by their dotted key (``score.weight``), and
        ``training`` as the training settings of the task."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {unknown}")
        task = d.get("task", "cnn")
        training = TRAINING.get(task, ProxyTraining) if isinstance(task, str) else ProxyTraining
        others = {k: v for k, v in d.items() if k != "training"}
        problem = json_type_problem(cls, others)
        if problem is None and "training" in d:
            problem = json_type_problem(training, d["training"], "training")
        if problem is not None:
            raise ConfigError(f"{source}: {problem}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> SearchConfig:
        """The config of a JSON object (:meth:`check_json`, then the checks of construction);
        every error names ``source``; a key unknown to nested settings is named by its dotted
        key (``ood.bogus``)."""
        cls.check_json(d, source)
        task = d.get("task", "cnn")
        nested = {**NESTED_SETTINGS, "training": TRAINING.get(task, ProxyTraining)}
        for key, kind in nested.items():
            if isinstance(d.get(key), dict):
                names = {f.name for f in fields(kind)}
                if unknown := sorted(f"{key}.{k}" for k in d[key] if k not in names):
                    raise ConfigError(f"{source}: unknown setting(s) {unknown}")
        d = dict(d)
        try:
            if "training" in d:
                d["training"] = TRAINING.get(d.get("task", "cnn"), ProxyTraining)(**d["training"])
            for key, kind in NESTED_SETTINGS.items():
                if key in d:
                    d[key] = kind(**d[key])
            if d.get("screening_stages"):
                d["screening_stages"] = stages_from_json(list(d["screening_stages"]), source)
            else:
                d.pop("screening_stages", None)
            return cls(**d)
        except TypeError as err:
            raise ConfigError(f"{source}: {err}") from None
        except ConfigError as err:
            if str(err).startswith(f"{source}:"):
                raise
            raise ConfigError(f"{source}: {err}") from None

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` to ``path`` as indented JSON (what :meth:`load` reads)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> SearchConfig:
        """The config saved in the JSON file ``path``; any problem is a one-line
        :class:`ConfigError` naming the file (and the key)."""
        data = read_json_file(path, ConfigError, "config")
        return cls.from_dict(data, str(path))


def uses_latency(config: SearchConfig, costs: Iterable[str] = LATENCY_COSTS) -> bool:
    """Whether ``config`` scores or bounds a latency of ``costs`` (default: either, measured
    or predicted by a table) as its cost or a constraint."""
    return config.score.cost in costs or any(c in config.constraints for c in costs)


#: Settings that only some searches read, by name: whether ``config`` reads it, and what would
#: (a setting given to a search that does not read it is refused: it would be saved, ignored);
#: a ``custom`` strategy may read any of the strategies' settings.
READ_BY: Mapping[str, tuple[Callable[[SearchConfig], bool], str]] = MappingProxyType(
    {
        "patience": (lambda c: c.strategy in ("autoshrink", "custom"), "strategy autoshrink"),
        "population_size": (lambda c: c.strategy in ("rea", "custom"), "strategy rea"),
        "tournament_size": (lambda c: c.strategy in ("rea", "custom"), "strategy rea"),
        "zc_proxy": (lambda c: c.screening == "zero-cost", "screening zero-cost"),
        "zc_batch": (lambda c: c.screening == "zero-cost", "screening zero-cost"),
        "oneshot_epochs": (lambda c: c.evaluator == "oneshot", "evaluator oneshot"),
        "ood": (lambda c: c.objective == "ood", "objective ood"),
        "latency": (uses_latency, "a latency cost or constraint"),
        "latency_macro": (uses_latency, "a latency cost or constraint"),
        "latency_table": (
            lambda c: uses_latency(c, ("table_latency_ms",)),
            "a table_latency_ms cost or constraint",
        ),
    }
)


def unread_settings(config: SearchConfig, given: Iterable[str]) -> list[tuple[str, str]]:
    """``(setting, what would read it)`` of the ``given`` settings that ``config`` does not
    read (:data:`READ_BY`)."""
    return [
        (name, READ_BY[name][1])
        for name in given
        if name in READ_BY and not READ_BY[name][0](config)
    ]
