"""Image shards: fixed-size images stacked in one ``.npy`` file each, memory-mappable.

A shard is written in one go, atomically, when its chunk of inputs is done: images stream into
a raw temporary file (memory stays flat however large the shard), then become an ``.npy`` under
its final name by one rename. Readers use ``np.load(path, mmap_mode="r")``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medtune.workspace import atomic_path


class ShardWriter:
    """Collects images of one shape and dtype; :meth:`finish` writes the ``.npy``."""

    def __init__(self, path: Path, size: int, dtype: str) -> None:
        self.path = Path(path)
        self.shape = (size, size)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw_path = self.path.with_name(f".{self.path.name}.raw")
        self._raw = open(self._raw_path, "wb")  # noqa: SIM115 (closed in finish/abort)

    def add(self, image: np.ndarray) -> int:
        """Append ``image``; return its index in the shard."""
        if image.shape != self.shape or image.dtype != self.dtype:
            raise ValueError(
                f"shard takes {self.shape} {self.dtype}, got {image.shape} {image.dtype}"
            )
        self._raw.write(np.ascontiguousarray(image).tobytes())
        self.count += 1
        return self.count - 1

    def finish(self) -> Path:
        """Write the ``.npy`` atomically (also for zero images) and drop the raw file."""
        self._raw.close()
        shape = (self.count, *self.shape)
        with atomic_path(self.path) as tmp:
            if self.count == 0:
                with open(tmp, "wb") as fh:
                    np.save(fh, np.zeros(shape, self.dtype))
            else:
                raw = np.memmap(self._raw_path, self.dtype, "r", shape=shape)
                out = np.lib.format.open_memmap(tmp, "w+", self.dtype, shape)
                for start in range(0, self.count, 256):  # bounded memory
                    out[start : start + 256] = raw[start : start + 256]
                out.flush()
                del out, raw
        self._raw_path.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        self._raw.close()
        self._raw_path.unlink(missing_ok=True)


def load_shard(path: str | os.PathLike[str]) -> np.ndarray:
    """A shard's images, memory-mapped read-only."""
    return np.load(path, mmap_mode="r")
