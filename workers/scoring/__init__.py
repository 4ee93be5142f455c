"""The scoring data path: the engine that streams a file through its model
(:mod:`.engine`), mini-batches and scores (:mod:`.batches`), rows the model refuses
(:mod:`.rejects`), progress (:mod:`.progress`), the input and output formats
(:mod:`.formats`) and the model protocols (:mod:`.protocols`)."""

import os

# pyarrow's default allocator (mimalloc) keeps what it frees: scoring a 1 GB Parquet
# file took a process ~45 MiB higher with it than with the system allocator (malloc),
# which gives back. Read once, when pyarrow's C++ library loads: set here, before any
# module of the data path imports pyarrow; an operator's own setting wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
