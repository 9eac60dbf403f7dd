"""The layout (data/store/layout.py): slide ids safe as group names, the chunk file path."""

from __future__ import annotations

import pytest

from lymph.data.errors import SlideError, StoreError
from lymph.data.slides import safe_id, strip_slide_suffix
from lymph.data.store import CHUNK_PATCHES, check_slide_id
from lymph.data.store.layout import chunk_path


@pytest.mark.parametrize(
    ("name", "expected"),
    [("tumor_001.tif", "tumor_001"), ("../evil/../x.svs", "evil___x"), ("a\x00b.ndpi", "a_b"),
     ("CMU-1 small.svs", "CMU-1_small")],
)
def test_ids_made_by_the_one_rule_are_safe_group_names(name, expected):
    """A file name made an id by the slide discovery's rule (`safe_id` of the name without its
    slide suffix) is one path component, and the store takes it as a group name."""
    sid = safe_id(strip_slide_suffix(name))
    assert "/" not in sid and ".." not in sid and not any(ord(c) < 32 for c in sid)
    assert sid == expected
    check_slide_id(sid)


def test_a_name_with_no_usable_id_is_refused():
    with pytest.raises(SlideError, match="no usable id"):
        safe_id(strip_slide_suffix("..."))
    with pytest.raises(StoreError, match="not safe as a store group name"):
        check_slide_id("...")


@pytest.mark.parametrize("shape", [(150, 8, 8, 3), (150, 2), (150,), (150, 8, 8)])
def test_chunk_path_is_zarrs_own_chunk_key(tmp_path, shape):
    """The one chunk path lymph computes (writes, reads, checks, digests) is the key zarr's
    default '/' encoding gives, for every array shape of the schema."""
    import zarr

    chunks = (CHUNK_PATCHES, *shape[1:])
    array = zarr.open_group(str(tmp_path / "g.zarr"), mode="w").create_array(
        "a", shape=shape, chunks=chunks, dtype="uint8")
    for i in range(3):
        key = array.metadata.encode_chunk_key((i,) + (0,) * (len(shape) - 1))
        assert chunk_path(tmp_path, i, len(shape)) == tmp_path / key
