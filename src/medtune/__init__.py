"""medtune: fine-tune healthcare foundation models on local real-world imaging data."""

import os as _os

__version__ = "0.1.0"

# medtune's Arrow work is many small tables read, written and merged one after another. Arrow's
# default allocator (jemalloc) keeps the pages it frees, so ingest's memory grew with the number
# of inputs (peak 150 -> 170 MiB from 1,000 to 10,000 files); the C library's allocator gives
# them back (133 -> 141 MiB). It takes effect only if pyarrow was not imported before medtune;
# set ARROW_DEFAULT_MEMORY_POOL yourself to choose otherwise.
_os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
