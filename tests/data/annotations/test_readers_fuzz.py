"""Fuzz-style robustness of the annotation and labels readers (issue 11).

A few hundred malformed inputs, generated from valid documents with a seeded numpy Generator
(truncations, byte flips, inserted and deleted spans, wrong JSON types, deep nesting, huge and
non-finite numbers, empty files, other encodings), go through `parse_asap_xml`,
`parse_geojson`, `read_annotations` and `read_labels_csv`. Each must either return or raise one
of lymph's own errors (a LymphError): never a bare Python exception, which the CLI would print
as a traceback.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lymph.data.annotations import (
    parse_asap_xml,
    parse_geojson,
    read_annotations,
    read_labels_csv,
)
from lymph.data.errors import LymphError

ASAP = b"""<?xml version="1.0"?>
<ASAP_Annotations>
 <Annotations>
  <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
   <Coordinates>
    <Coordinate Order="0" X="1000.5" Y="2000.25" />
    <Coordinate Order="1" X="1400" Y="2000" />
    <Coordinate Order="2" X="1400" Y="2600.75" />
    <Coordinate Order="3" X="1000" Y="2600" />
   </Coordinates>
  </Annotation>
  <Annotation Name="Annotation 1" Type="Polygon" PartOfGroup="_2" Color="#64FE2E">
   <Coordinates>
    <Coordinate Order="0" X="1100" Y="2100" />
    <Coordinate Order="1" X="1200" Y="2100" />
    <Coordinate Order="2" X="1200" Y="2200" />
   </Coordinates>
  </Annotation>
  <Annotation Name="Dot" Type="Dot" PartOfGroup="None"><Coordinates>
    <Coordinate Order="0" X="5" Y="5" /></Coordinates></Annotation>
 </Annotations>
 <AnnotationGroups><Group Name="_0" PartOfGroup="None" Color="#FF0000"><Attributes />
 </Group></AnnotationGroups>
</ASAP_Annotations>
"""

GEOJSON: dict[str, Any] = {
    "type": "FeatureCollection",
    "features": [
        {"type": "Feature", "id": "a1",
         "geometry": {"type": "Polygon", "coordinates": [
             [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]],
             [[40, 40], [60, 40], [60, 60], [40, 40]]]},
         "properties": {"objectType": "annotation", "name": "lesion",
                        "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
        {"type": "Feature",
         "geometry": {"type": "MultiPolygon", "coordinates": [
             [[[200, 200], [210.5, 200], [210, 210.25], [200, 200]]]]},
         "properties": {"classification": "Exclusion"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 4]},
         "properties": {}},
    ],
}

LABELS = b"slide,label\nTest_001,Tumor,Macro,Primary\nTest_002,Normal,,\ntumor_003.tif,1\n" \
         b"normal_004,0\nx.ome.tif,true\n"

WRONG_VALUES: list[Any] = [None, True, 0, -1, 10 ** 400, 1e300, -1e300, float("nan"),
                           float("inf"), "", "Polygon", "1e999", [], [[]], {}, {"type": 1},
                           [1, 2, 3], [[1, 2]], [["a", "b"], [1, 2], [3, 4]]]


def _mutate_bytes(rng: np.random.Generator, data: bytes) -> bytes:
    """One random byte-level corruption of `data`."""
    n = len(data)
    kind = int(rng.integers(0, 9))
    if kind == 0:  # truncation
        return data[: int(rng.integers(0, n))]
    if kind == 1:  # byte flips
        arr = bytearray(data)
        for i in rng.integers(0, n, int(rng.integers(1, 8))):
            arr[int(i)] = int(rng.integers(0, 256))
        return bytes(arr)
    if kind == 2:  # insert random bytes
        i = int(rng.integers(0, n))
        return data[:i] + rng.bytes(int(rng.integers(1, 32))) + data[i:]
    if kind == 3:  # delete a span
        i = int(rng.integers(0, n))
        return data[:i] + data[i + int(rng.integers(1, 64)):]
    if kind == 4:  # duplicate a span
        i = int(rng.integers(0, n))
        j = min(n, i + int(rng.integers(1, 128)))
        return data[:j] + data[i:j] + data[j:]
    if kind == 5:  # other encodings
        enc = ["utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252"][int(rng.integers(0, 5))]
        text = data.decode("utf-8", "replace").replace("Tumor", "Tümör")
        return text.encode(enc, "replace")
    if kind == 6:  # huge or non-finite numbers in place of a digit run
        text = data.decode("utf-8", "replace")
        pos = [i for i, c in enumerate(text) if c.isdigit()]
        if not pos:
            return data
        i = pos[int(rng.integers(0, len(pos)))]
        big = ["1e300", "-1e300", "1e400", "NaN", "Infinity", "9" * 400, "0x1F", "1_000"]
        return (text[:i] + big[int(rng.integers(0, len(big)))] + text[i + 1:]).encode()
    if kind == 7:  # empty, whitespace, or NUL bytes
        return [b"", b"   \n", b"\x00" * 64, b"\xef\xbb\xbf"][int(rng.integers(0, 4))]
    return rng.bytes(int(rng.integers(1, 512)))  # pure noise


def _json_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every container path of a JSON document (iteratively)."""
    out, stack = [], [(obj, prefix)]
    while stack:
        node, path = stack.pop()
        out.append(path)
        if isinstance(node, dict):
            stack.extend((v, path + (k,)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, path + (i,)) for i, v in enumerate(node))
    return out


def _mutate_json(rng: np.random.Generator) -> bytes:
    """GEOJSON with one node replaced by a value of a wrong type, or deeply nested."""
    doc = copy.deepcopy(GEOJSON)
    paths = [p for p in _json_paths(doc) if p]
    path = paths[int(rng.integers(0, len(paths)))]
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    kind = int(rng.integers(0, 3))
    if kind == 0:
        value = copy.deepcopy(WRONG_VALUES[int(rng.integers(0, len(WRONG_VALUES)))])
    elif kind == 1:  # deep nesting in place of a node
        depth = int(rng.choice([50, 500, 990, 5000, 100_000]))
        value = "DEEP" + str(depth)
    else:
        del parent[path[-1]]
        return json.dumps(doc).encode()
    parent[path[-1]] = value
    text = json.dumps(doc)
    if isinstance(value, str) and value.startswith("DEEP"):
        depth = int(value[4:])
        text = text.replace(json.dumps(value), "[" * depth + "]" * depth)
    return text.encode()


def _run(fn: Callable[[], Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn()
        except LymphError:
            pass


def _cases() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(20261202)
    geo = json.dumps(GEOJSON).encode()
    cases: list[tuple[str, bytes]] = []
    for _ in range(90):
        cases.append(("xml", _mutate_bytes(rng, ASAP)))
    for _ in range(70):
        cases.append(("geojson", _mutate_bytes(rng, geo)))
    for _ in range(90):
        cases.append(("geojson", _mutate_json(rng)))
    for _ in range(90):
        cases.append(("csv", _mutate_bytes(rng, LABELS)))
    cases += [("xml", b"<ASAP_Annotations>" * 20000), ("xml", b"<a>" * 100_000 + b"</a>" * 100_000),
              ("geojson", b"[" * 100_000 + b"]" * 100_000), ("geojson", b'"x"'),
              ("geojson", b"1e999"), ("csv", b"a," * 100_000), ("csv", b'"' + b"x" * 200_000),
              ("csv", "slide,label\n腫瘍,Tumor\n".encode("utf-16"))]
    return cases


CASES = _cases()


def test_the_generated_inputs_are_malformed_in_many_ways():
    assert len(CASES) >= 300
    assert len({data for _, data in CASES}) > 0.8 * len(CASES)  # few repeats (empty files)


@pytest.mark.parametrize("kind", ["xml", "geojson", "csv"])
def test_readers_raise_only_lymph_errors_on_malformed_input(kind, tmp_path: Path):
    suffix = {"xml": ".xml", "geojson": ".geojson", "csv": ".csv"}[kind]
    inputs = [data for k, data in CASES if k == kind]
    for i, data in enumerate(inputs):
        path = tmp_path / f"case_{i}{suffix}"
        path.write_bytes(data)
        try:
            if kind == "xml":
                _run(lambda d=data, p=path: parse_asap_xml(d, source=p))
                _run(lambda p=path: read_annotations(p))
            elif kind == "geojson":
                _run(lambda d=data, p=path: parse_geojson(d, source=p))
                _run(lambda p=path: read_annotations(p))
            else:
                _run(lambda p=path: read_labels_csv(p))
        except Exception as exc:  # the assertion: anything else is a traceback for the user
            pytest.fail(f"{kind} case {i} ({data[:60]!r}...): {type(exc).__name__}: {exc}")


def test_mask_tiff_reader_raises_only_lymph_errors_on_corrupt_files(tmp_path: Path):
    """Strip and tiled mask TIFFs with flipped bytes, truncations and inserted noise through
    `open_mask` and whole-image reads."""
    import tifffile

    from lymph.data.annotations import open_mask

    rng = np.random.default_rng(7)
    m = np.zeros((96, 128), np.uint8)
    m[20:60, 30:90] = 255
    sources = []
    for i, kw in enumerate(({}, {"compression": "zlib", "rowsperstrip": 16},
                            {"tile": (64, 64)})):
        tifffile.imwrite(tmp_path / f"src{i}.tif", m, **kw)
        sources.append((tmp_path / f"src{i}.tif").read_bytes())
    for i in range(150):
        data = _mutate_bytes(rng, sources[i % 3])
        path = tmp_path / f"m{i}_mask.tif"
        path.write_bytes(data)

        def read(p: Path = path) -> None:
            with open_mask(p) as r:
                r.read_region((0, 0), 0, r.dimensions)

        try:
            _run(read)
        except Exception as exc:
            pytest.fail(f"mask case {i} ({data[:30]!r}...): {type(exc).__name__}: {exc}")
