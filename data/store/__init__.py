"""The patch store: the one package that knows the on-disk layout, and the only one that
imports zarr.

```
STORE/                 zarr v3 group; attrs["lymph"] = {"schema_version", "patch_size", "level",
                       "seed", ... every extraction setting, "lymph_version"}
  slides/<slide_id>/   one group per slide; attrs "source", "status" (tumor|normal|unlabeled),
                       "complete" (written last), "mpp", "level_dimensions",
                       "tissue_fraction", "n_patches", "n_tumor"
    images  uint8 (n, P, P, 3)   chunks of CHUNK_PATCHES patches
    coords  int64 (n, 2)         level-0 (x, y) of each patch's top-left corner
    labels  uint8 (n,)           drawn class, 1 tumor, 0 non-tumor  (tumor and normal slides)
    masks   uint8 (n, P, P)      0/1 tumor pixels                   (tumor and normal slides)
  .lymph-writer.lock     the writers' lock (holder pid, host, command, start time)
```

Partial annotations (a compatible extension of schema version 2, no version bump): a slide
extracted from an annotation file with reviewed regions (`lymph.data.partial`) has the attrs
`reviewed` (true), `reviewed_regions`, `reviewed_area_level0`, `reviewed_tumor_area_level0` and
`mask_ignore_value` (255), and its masks hold 255 at pixels outside every reviewed region (their
label is unknown; losses and metrics skip them). A slide without `reviewed` (every slide of an
older store) is exhaustively annotated: its masks hold only 0/1.

Nothing is silently wrong (schema version 2): every chunk of every array is written (also
all-zero ones) and ends with a crc32c checksum (codecs bytes -> blosc -> crc32c). A read checks
that each chunk it touches exists and that its checksum matches, and raises StoreError naming the
slide, the array and the chunk otherwise (zarr alone returns the fill value for a missing chunk).
A slide is complete when its `complete` attribute is true AND all its arrays hold `n_patches`
patches; `verify_store` (`lymph info --verify`) decodes every chunk. One writer at a time:
`writer_lock` takes an exclusive `flock` on the lock file and refuses a second writer by naming
the holder.

Why 64-patch chunks, blosc-lz4: measured here with zarr 3.1, reading whole 64-patch chunks in
sequence gives about 2,700 patches/s against 44-68/s for random single patches from the same
chunks and 740/s for one-patch chunks; the trainer therefore streams whole chunks in a shuffled
order and shuffles patches inside a bounded buffer. lz4 writes at ~180 MB/s, so compression never
limits extraction (OpenSlide reads ~200 patches/s = 54 MB/s per core).

Modules: `layout` (constants, chunk paths, slide ids; no zarr), `schema` (raw metadata against the
schema, content digests), `groups` (the root, its settings, the writer lock, the walk over slide
groups), `chunks` (direct chunk writes, checked chunk reads, the chunk check), `writer`
(`SlideWriter`), `reader` (`PatchStore`), `verify` (`lymph info`, `--verify`).
"""

from lymph.data.lock import LOCK_FILE
from lymph.data.store.chunks import read_chunk_range
from lymph.data.store.groups import (
    all_slide_attrs,
    check_out,
    create_store,
    differing_settings,
    single_threaded_reads,
    slide_attrs,
    writer_lock,
)
from lymph.data.store.layout import (
    ARRAY_CONFIG,
    CHUNK_PATCHES,
    LABELED_STATUSES,
    RUNTIME_SETTINGS,
    SCHEMA_VERSION,
    SLIDES,
    STATUSES,
    check_slide_id,
)
from lymph.data.store.reader import ChunkRef, PatchBatch, PatchStore, SlideInfo
from lymph.data.store.schema import enclosing_store
from lymph.data.store.verify import (
    BadChunk,
    describe_store,
    slide_damage,
    slide_is_complete,
    verify_store,
)
from lymph.data.store.writer import SlideWriter, write_slide

__all__ = [
    "ARRAY_CONFIG", "CHUNK_PATCHES", "LABELED_STATUSES", "LOCK_FILE", "RUNTIME_SETTINGS",
    "SCHEMA_VERSION", "SLIDES", "STATUSES", "BadChunk", "ChunkRef", "PatchBatch", "PatchStore",
    "SlideInfo", "SlideWriter", "all_slide_attrs", "check_out", "check_slide_id",
    "create_store", "describe_store", "differing_settings", "enclosing_store",
    "read_chunk_range", "single_threaded_reads", "slide_attrs", "slide_damage",
    "slide_is_complete", "verify_store", "write_slide", "writer_lock",
]
