"""Training checkpoints: whole directories of safetensors and JSON, written atomically.

A checkpoint is ``runs/<name>/checkpoints/step-00001234/``::

    model.safetensors      the model's state dict (tied weights stored once)
    ema.safetensors        the averaged trainable weights, when the run keeps an EMA
    optimizer.safetensors  the optimizer's tensors; its metadata "index" is the JSON structure
    state.json             step, data position, early-stopping state, RNG states of every rank
    complete               written last: the file names and sizes, checked on load

It is assembled in a hidden ``.partial-*`` directory and renamed into place, so a kill leaves
either the whole checkpoint or none under a ``step-*`` name; :func:`latest_complete` also
skips any ``step-*`` directory without its ``complete`` marker (a copy cut short). Loading
reads only safetensors and JSON: nothing in a checkpoint can execute code.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import random
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

import medtune
from medtune.errors import MedtuneError
from medtune.workspace import fsync_path

CHECKPOINTS = "checkpoints"
MARKER = "complete"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:08d}"


def list_complete(run_dir: Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / MARKER).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_complete(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None; partial directories are ignored."""
    found = list_complete(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the checkpoint of ``step`` as one directory (replacing one of the same step)."""
    final = checkpoint_dir(run_dir, step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_partials(root)
    tmp = root / f".partial-{final.name}-{os.getpid()}"
    tmp.mkdir()
    try:
        save_model(model, str(tmp / "model.safetensors"))
        if ema is not None:
            save_file(_cpu(ema), str(tmp / "ema.safetensors"))
        tensors, index = flatten_state(optimizer.state_dict())
        save_file(_cpu(tensors), str(tmp / "optimizer.safetensors"), {"index": json.dumps(index)})
        record = {"format": 1, "medtune_version": medtune.__version__, "step": step, **state}
        (tmp / "state.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        (tmp / MARKER).write_text(json.dumps({"files": sizes}), encoding="utf-8")
        for path in tmp.iterdir():
            fsync_path(path)
        fsync_path(tmp)
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Load weights (and optimizer state) from a checkpoint; return (state.json, ema tensors)."""
    path = Path(path)
    _check_complete(path)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        load_model(model, str(path / "model.safetensors"), strict=True, device=str(device))
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise MedtuneError(f"{path}: weights do not fit the model ({first[0].strip()})") from None
    if optimizer is not None:
        with safe_open(str(path / "optimizer.safetensors"), "pt") as fh:
            index = json.loads(fh.metadata()["index"])
        optimizer.load_state_dict(unflatten_state(index, load_file(path / "optimizer.safetensors")))
    ema_path = path / "ema.safetensors"
    ema = load_file(ema_path, device=str(device)) if ema_path.exists() else None
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return state, ema


def load_evaluated_weights(path: Path, model: nn.Module) -> int:
    """Load into ``model`` the weights its evaluation saw at the checkpoint ``path``: the
    model's weights with the EMA average in place of the parameters it shadows (when the run
    kept one). Return the checkpoint's step. For export: the optimizer is not needed."""
    state, ema = load_checkpoint(path, model)
    if ema:
        params = dict(model.named_parameters())
        missing = sorted(set(ema) - set(params))
        if missing:
            raise MedtuneError(f"{path}: EMA weights for parameters the model lacks ({missing[0]})")
        with torch.no_grad():
            for name, value in ema.items():
                params[name].copy_(value)
    return int(state["step"])


def prune_checkpoints(run_dir: Path, keep: int, protect: set[int] = frozenset()) -> None:
    """Delete all but the newest ``keep`` complete checkpoints and the steps in ``protect``."""
    complete = list_complete(run_dir)
    for path in complete[: max(0, len(complete) - keep)]:
        if int(_STEP_DIR.match(path.name).group(1)) not in protect:
            shutil.rmtree(path)


# --- optimizer state as tensors + a JSON skeleton (no pickle) ---


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state dict into named tensors and a JSON skeleton that refers to them.

    Optimizer state dicts key parameters by int, which JSON would turn into strings (and torch
    would then silently drop the state), so dicts with non-string keys keep their keys typed.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, key: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach()
            return {"__tensor__": key}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {k: walk(v, f"{key}.{k}") for k, v in value.items()}
            return {"__items__": [[k, walk(v, f"{key}.{k}")] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{key}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(value)]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"cannot store {type(value).__name__} at {key!r} in a checkpoint")

    return tensors, walk(obj, prefix or "state")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if "__items__" in skeleton:
        return {k: unflatten_state(v, tensors) for k, v in skeleton["__items__"]}
    if "__tuple__" in skeleton:
        return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
    return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}


# --- the data position: a resumed run sees the same batches ---


class BatchStream:
    """Batches across epochs, recording where it is so that a resumed run sees the same batches.

    A checkpoint keeps the epoch, the batches drawn in it, and every generator's state at the
    epoch's start and now. :meth:`resume` restores the epoch-start state, calls ``set_epoch``
    and ``iter`` (so a shuffling sampler draws the same permutation and DataLoader workers the
    same seeds), moves past the batches already used, then restores the current state. A
    DataLoader over a sampler whose ``set_epoch`` takes a ``start`` (medtune's
    :class:`~medtune.train.data.SeededSampler`) starts there without loading them; other
    iterables are read through the used batches again.
    """

    def __init__(self, batches: Iterable[dict]) -> None:
        self.batches = batches
        self.epoch = 0
        self.position = 0
        self.epoch_rng: dict[str, Any] = {}
        self._it: Iterator[dict] = iter(())

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0
        self.epoch_rng = rng_state()
        self._begin()

    def resume(self, epoch: int, position: int, epoch_rng: dict | None, now: dict | None) -> None:
        self.epoch, self.position = epoch, 0
        if epoch_rng is not None:
            set_rng_state(epoch_rng)
        self.epoch_rng = epoch_rng or rng_state()
        skipped = self._begin(start_batch=position)
        self.position = skipped
        for _ in range(position - skipped):
            self.next()
        if now is not None:
            set_rng_state(now)

    def next(self) -> dict:
        try:
            batch = next(self._it)
        except StopIteration:
            if self.position == 0:
                raise MedtuneError("training data: an epoch yielded no batches") from None
            self.start_epoch(self.epoch + 1)
            batch = next(self._it)
        self.position += 1
        return batch

    def _begin(self, start_batch: int = 0) -> int:
        """Begin the epoch's iteration; return how many of its first ``start_batch`` batches
        the sampler skipped itself (0, or all of them)."""
        # DistributedSampler and seeded samplers reshuffle per epoch through set_epoch.
        holders = [self.batches, getattr(self.batches, "sampler", None)]
        holders.append(getattr(getattr(self.batches, "batch_sampler", None), "sampler", None))
        batch_size = getattr(self.batches, "batch_size", None)
        seen, skipped = set(), 0
        for holder in holders:
            if hasattr(holder, "set_epoch") and id(holder) not in seen:
                seen.add(id(holder))
                if start_batch and batch_size and _takes_start(holder.set_epoch):
                    holder.set_epoch(self.epoch, start=start_batch * batch_size)
                    skipped = start_batch
                else:
                    holder.set_epoch(self.epoch)
        self._it = iter(self.batches)
        return skipped


def _takes_start(set_epoch: Any) -> bool:
    try:
        return "start" in inspect.signature(set_epoch).parameters
    except (TypeError, ValueError):
        return False


# --- random number generators as JSON ---


def rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's, torch's CPU and CUDA generators, as JSON values."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators saved by :func:`rng_state`."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


# --- filesystem ---


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def _move_into_place(tmp: Path, final: Path) -> None:
    old = None
    if final.exists():  # the same step saved again (after a resume): swap, then drop the old
        old = final.with_name(f".partial-old-{final.name}-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_path(final.parent)
    if old is not None:
        shutil.rmtree(old)


def _remove_partials(root: Path) -> None:
    # Left by a run killed while writing; one run writes to a run folder at a time.
    for path in root.glob(".partial-*"):
        shutil.rmtree(path, ignore_errors=True)


def _check_complete(path: Path) -> None:
    marker = path / MARKER
    if not marker.is_file():
        raise MedtuneError(f"{path}: checkpoint is incomplete (no '{MARKER}' marker)")
    sizes = json.loads(marker.read_text(encoding="utf-8"))["files"]
    for name, size in sizes.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            raise MedtuneError(f"{path}: checkpoint file {name} is missing or truncated")
