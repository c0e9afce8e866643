"""Training checkpoints without pickles: tensors in safetensors, everything else in JSON.

A checkpoint of epoch ``E`` is two files in the run's ``checkpoints/`` folder:
``epoch-EEEE.safetensors`` (model, EMA and optimiser tensors, the epoch in its metadata) and
``epoch-EEEE.json`` (schedule, sampler, EMA and loss-scaler state, optimiser settings, the
recipe, the seed, what the run is -- network, data set, task -- and the history so far). Each
is written to a temporary name and renamed, the JSON last: a checkpoint exists once its JSON
does, so a kill at any moment leaves the previous checkpoint whole. The newest ``keep``
checkpoints are kept.

:func:`flatten_optimizer` / :func:`unflatten_optimizer` split an optimiser's state dict into
tensors and JSON and back; :func:`write_log` writes a run's epoch log (``log.jsonl``), from its
start or appending; :func:`check_same_run` refuses a checkpoint whose :func:`run_identity` --
recipe, seed and the caller's description of the run -- is not this run's, naming what changed
(:func:`~autoshrink.settings_diff.differences`); :func:`check_weights_fit` refuses weights of
another network before any is loaded.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from autoshrink.atomic_write import save_tensors, write_text_atomic
from autoshrink.errors import JournalError
from autoshrink.json_values import as_read_back, finite_or_none
from autoshrink.nn.state_fit import misfit, non_finite
from autoshrink.ranges import is_number
from autoshrink.settings_diff import differences, first_three
from autoshrink.user_files import read_json_file

logger = logging.getLogger(__name__)

FORMAT = "autoshrink.checkpoint/1"
#: The folder of a run folder that holds its checkpoints.
CHECKPOINTS = "checkpoints"
NAME = re.compile(r"^epoch-(\d{4,})\.json$")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the epoch it ends, its tensors and its JSON state."""

    epoch: int
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]


def _stem(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def save_checkpoint(
    folder: Path, epoch: int, tensors: dict[str, torch.Tensor], state: dict[str, Any], keep: int = 2
) -> Path:
    """Write the checkpoint of ``epoch`` into ``folder`` and drop all but the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = _stem(epoch)
    meta = {"format": FORMAT, "epoch": str(epoch)}
    save_tensors(folder / f"{stem}.safetensors", tensors, meta)
    # json.dumps, not write_json: the state comes back as it was, an infinite best loss included
    text = json.dumps({"format": FORMAT, "epoch": epoch, **state}, indent=1) + "\n"
    write_text_atomic(folder / f"{stem}.json", text)
    for old in _epochs(folder)[:-keep] if keep > 0 else []:
        for suffix in (".json", ".safetensors"):
            (folder / f"{_stem(old)}{suffix}").unlink(missing_ok=True)
    return folder / f"{stem}.json"


def _epochs(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := NAME.match(p.name)))


def latest_epoch(folder: Path) -> int | None:
    """The epoch of the newest checkpoint in ``folder`` (``None``: none there)."""
    epochs = _epochs(folder)
    return epochs[-1] if epochs else None


def newest_checkpoint(out: str | Path) -> Callable[[], int | None]:
    """What reads, when called, the epoch of the newest checkpoint of the run in ``out`` (its
    ``checkpoints/``): the way :func:`~autoshrink.stop_signals.stop_says_resume` says where a
    stopped run goes on."""
    return partial(latest_epoch, Path(out) / CHECKPOINTS)


def load_latest(folder: Path) -> Checkpoint | None:
    """The newest complete checkpoint in ``folder``, or ``None`` when there is none."""
    epoch = latest_epoch(folder)
    if epoch is None:
        return None
    stem = folder / _stem(epoch)
    state = read_json_file(stem.with_suffix(".json"), JournalError, "checkpoint")
    try:
        with safe_open(str(stem.with_suffix(".safetensors")), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(stem.with_suffix(".safetensors")))
    except (OSError, SafetensorError) as err:
        raise JournalError(f"{stem}: unreadable checkpoint ({err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("epoch") != epoch:
        raise JournalError(f"{stem}.json: not an {FORMAT} checkpoint of epoch {epoch}")
    if meta.get("format") != FORMAT or meta.get("epoch") != str(epoch):  # another's tensors
        raise JournalError(
            f"{stem}.safetensors: not the tensors of epoch {epoch} (its header says format "
            f"{meta.get('format')!r}, epoch {meta.get('epoch')!r}); remove it and "
            f"{stem.name}.json to resume from the one before, or start a fresh --out"
        )
    bad = _unsound_tensor(tensors)
    if bad is not None:
        raise JournalError(
            f"{stem}.safetensors: a damaged checkpoint, it cannot be restored (tensor {bad}); "
            f"remove it and {stem.name}.json to resume from the one before, or start a fresh --out"
        )
    return Checkpoint(epoch, tensors, state)


def _unsound_tensor(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The first of ``tensors`` that no checkpoint holds, and what is wrong with it: NaN or inf
    values (a diverged epoch writes no checkpoint) or a negative batch-norm variance."""
    bad = non_finite(tensors)
    if bad is not None:
        return f"{bad} holds NaN or inf values"
    for name, value in tensors.items():
        if name.endswith("running_var") and bool((value < 0).any()):
            return f"{name} holds a negative variance"
    return None


class DamagedState(ValueError):
    """A checkpoint's state that reads but cannot be this run's (an optimiser tensor of
    another shape, a negative step count): :func:`restoring` says its message alone."""


def _damaged(ckpt: Checkpoint, folder: Path, what: str) -> JournalError:
    return JournalError(
        f"{folder / _stem(ckpt.epoch)}.json: a damaged checkpoint, it cannot be restored "
        f"({what}); remove it to resume from the one before, or start a fresh --out"
    )


@contextmanager
def restoring(ckpt: Checkpoint, folder: Path) -> Iterator[None]:
    """Run the body, which restores a run from ``ckpt`` (of ``folder``): a state it cannot
    read -- a key missing, a value of another type, as in a damaged or hand-edited file, or a
    :class:`DamagedState` -- is a one-line :class:`JournalError` naming the checkpoint."""
    try:
        yield
    except DamagedState as err:
        raise _damaged(ckpt, folder, str(err)) from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise _damaged(ckpt, folder, f"{type(err).__name__}: {err}") from None


def check_weights_fit(
    ckpt: Checkpoint, where: Path, *loads: tuple[torch.nn.Module, Mapping[str, torch.Tensor]]
) -> None:
    """Refuse, before any of them is loaded, weights of ``ckpt`` that do not fit the module
    they are for (each of ``loads``: a module and the state for it; :func:`misfit`): a
    one-line :class:`JournalError` naming the first misfit, and every module left as it was."""
    for module, state in loads:
        what = misfit(module, state)
        if what is not None:
            raise JournalError(
                f"{where}: the checkpoint of epoch {ckpt.epoch} does not fit this network "
                f"({what}); resume with the same settings or choose another folder"
            )


def clear_checkpoints(folder: Path) -> int:
    """Remove the checkpoints (and stray temporary files) in ``folder``; returns how many."""
    removed = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.lstrip(".").startswith("epoch-") and p.suffix in (
                ".json",
                ".safetensors",
                ".tmp",
            ):
                p.unlink()
                removed += p.suffix == ".json"
    return removed


def flatten_optimizer(state: dict[str, Any], prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser state dict as tensors (``prefix.<param>.<name>``) and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(
    tensors: dict[str, torch.Tensor], rest: dict[str, Any], prefix: str
) -> dict[str, Any]:
    """The inverse of :func:`flatten_optimizer`; an entry both among the tensors and among the
    numbers is a :class:`DamagedState` (the number replaced the tensor: PyTorch 2.2's SGD
    records a ``momentum_buffer`` of ``None``)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for pid, entries in rest["scalars"].items():
        held = state.setdefault(int(pid), {})
        if twice := sorted(held.keys() & entries.keys()):
            raise DamagedState(f"{prefix}.{pid}.{twice[0]} is both a tensor and a number")
        held.update(entries)
    return {"state": state, "param_groups": rest["param_groups"]}


def restored_history(ckpt: Checkpoint, numbers: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The ``history`` of ``ckpt``: a row (an object) for each of its epochs from 1, in order,
    each holding ``numbers`` as numbers; else a :class:`DamagedState` (a run went on with it
    and wrote it into its results and its next checkpoint)."""
    rows = ckpt.state["history"]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise DamagedState("its history is not a list of objects")
    epochs = [row.get("epoch") for row in rows]
    if [type(e) for e in epochs] != [int] * len(rows) or epochs != [*range(1, ckpt.epoch + 1)]:
        raise DamagedState(f"its history is not of epochs 1 to {ckpt.epoch}")
    for row in rows:
        for key in numbers:
            if not is_number(row.get(key)):
                raise DamagedState(f'epoch {row["epoch"]} of its history has no number "{key}"')
    return list(rows)


def check_optimizer_state(
    opt: torch.optim.Optimizer, state: Mapping[str, Any], prefix: str, *, stepped: bool
) -> None:
    """Raise :class:`DamagedState` unless ``state`` (:func:`unflatten_optimizer`'s, of
    ``prefix``) fits ``opt``, whose ``load_state_dict`` takes a tensor of another shape, a
    missing one or a parameter it lacks silently (or fails at the next step): as many
    parameters in each group; each state tensor of its parameter's shape (a ``step``: one
    number); every parameter holding the entries any holds (each takes its momentum at the
    same steps) -- and, when ``stepped`` and the optimiser keeps a state (anything but SGD
    without momentum), some."""
    groups = state["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(opt.param_groups):
        raise DamagedState(f"{prefix}: other parameter groups than the optimiser's")
    params: dict[int, torch.Tensor] = {}
    for saved, group in zip(groups, opt.param_groups, strict=True):
        ids = saved["params"]
        if not isinstance(ids, list) or len(ids) != len(group["params"]):
            raise DamagedState(f"{prefix}: a parameter group of another size")
        params.update(zip(ids, group["params"], strict=True))
    entries: Mapping[int, Mapping[str, Any]] = state["state"]
    for pid, entry in entries.items():
        if pid not in params:
            raise DamagedState(f"{prefix}.{pid}: a parameter the optimiser does not have")
        for name, value in entry.items():
            if not isinstance(value, torch.Tensor):
                continue
            want = [] if name == "step" else list(params[pid].shape)
            if list(value.shape) != want:
                raise DamagedState(
                    f"shape of {prefix}.{pid}.{name} is {list(value.shape)}, its parameter's {want}"
                )
    held = sorted({name for entry in entries.values() for name in entry})
    for pid in params:
        lacking = [name for name in held if name not in entries.get(pid, {})]
        if lacking:
            raise DamagedState(f"no {prefix}.{pid}.{lacking[0]}, which other parameters have")
    plain = isinstance(opt, torch.optim.SGD) and all(g["momentum"] == 0 for g in opt.param_groups)
    if stepped and not plain and not entries:
        raise DamagedState(f"no optimiser state ({prefix}.*) after its steps")


def run_identity(
    recipe: dict[str, Any], seed: int, run_info: dict[str, Any] | None
) -> dict[str, Any]:
    """What a checkpoint records of the run it belongs to (as JSON reads it back): the recipe
    (as a JSON object), the seed and ``run_info`` (what is trained on what: network, data)."""
    return as_read_back({"run": run_info, "recipe": recipe, "seed": seed})


def _recipe_epochs(recipe: object) -> object:
    """The ``epochs`` of a recorded recipe (``None`` when it is not an object: damaged)."""
    return recipe.get("epochs") if isinstance(recipe, dict) else None


def unrecorded(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The entries one level down in ``current`` (``data.sha256``) that the same objects of
    ``recorded`` lack: what a later version added to ``run_info``, which a checkpoint written
    before does not say."""
    return [
        f"{key}.{name}"
        for key, value in current.items()
        if isinstance(value, dict) and isinstance(recorded.get(key), dict)
        for name in value
        if name not in recorded[key]
    ]


def check_same_run(ckpt: Checkpoint, identity: dict[str, Any], where: Path) -> None:
    """Refuse to resume a checkpoint of another run (see :func:`run_identity`), naming the
    first settings that differ; one whose ``run`` is not an object (nor ``null``) is damaged,
    and said to be."""
    recorded = {key: ckpt.state.get(key) for key in identity}
    if not isinstance(recorded["run"], dict | None):  # a run_info is an object (or none)
        raise _damaged(ckpt, where, 'its "run" is not an object')
    if "run" not in ckpt.state:  # written before checkpoints recorded the run
        logger.warning("%s: the checkpoint does not record its network and data set", where)
        recorded["run"] = identity["run"]

    def flat(ident: dict[str, Any]) -> dict[str, Any]:  # run_info's keys at the top
        return {**(ident["run"] or {}), "recipe": ident["recipe"], "seed": ident["seed"]}

    saved, current = flat(recorded), flat(identity)
    for name in unrecorded(saved, current):  # not compared
        logger.warning("%s: the checkpoint does not record %s (an older version's)", where, name)
        key, field = name.split(".", 1)
        current[key] = {k: v for k, v in current[key].items() if k != field}
    changed = differences(saved, current)
    if changed:
        was, now = (_recipe_epochs(ident.get("recipe")) for ident in (recorded, identity))
        why = (  # the one change users try on purpose: more epochs
            "; the learning-rate schedule spans the epochs, so the run cannot be lengthened"
            if isinstance(was, int) and isinstance(now, int) and now > was
            else ""
        )
        raise JournalError(
            f"{where}: the checkpoint of epoch {ckpt.epoch} is of another run "
            f"({first_three(changed)}){why}; resume with the same settings or choose "
            "another folder"
        )


def checkpoint_to_resume(
    folder: Path, resume: bool, identity: dict[str, Any] | None = None, *, warn: bool = True
) -> Checkpoint | None:
    """The checkpoint a run continues: with ``resume``, the newest in ``folder`` -- refused
    (:func:`check_same_run`) when ``identity`` is given and it is of another run -- or, when
    there is none, ``None`` and a warning (if ``warn``) that the run starts from scratch.
    Without ``resume``: ``None``."""
    if not resume:
        return None
    ckpt = load_latest(folder)
    if ckpt is None:
        if warn:
            logger.warning(
                "%s: no checkpoint to resume from; training starts from scratch (epoch 1)", folder
            )
        return None
    if identity is not None:
        check_same_run(ckpt, identity, folder)
    logger.info("resuming from %s", folder / f"{_stem(ckpt.epoch)}.json")  # not before a refusal
    return ckpt


def clear_earlier_run(folder: Path) -> None:
    """Remove the checkpoints a run starting at epoch 1 finds in ``folder`` (an earlier run's,
    which a later resume must not pick up), with a warning when there were any."""
    if clear_checkpoints(folder):
        logger.warning("%s: removed the checkpoints of an earlier run", folder)


def write_log(path: Path, rows: list[dict[str, Any]], *, append: bool = False) -> None:
    """Write ``rows`` as a run's epoch log, one strict-JSON line each (NaN and inf as ``null``):
    the whole log (a run starting or resuming writes the epochs it has), or with ``append``
    the lines after it."""
    text = "".join(json.dumps(finite_or_none(r), allow_nan=False) + "\n" for r in rows)
    if not append:  # the whole log, in one step
        write_text_atomic(path, text)
        return
    with open(path, "a") as f:
        f.write(text)
