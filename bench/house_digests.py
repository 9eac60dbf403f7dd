"""Digests of everything lymph writes on a tiny end-to-end run: the behaviour check of a refactor.

Issue 19 moves code between modules and deletes shims; it must not change a single output. This
script runs every stage through the CLI (so it runs unchanged before and after a refactor) on a
tiny synthetic world, then writes one digest per output file:

- the store: every file's bytes (chunks and metadata);
- checkpoints: the model and optimizer tensors and the step (torch.save's zip bytes differ run to
  run, the tensors must not);
- predict's maps and scores, eval's metrics.json: JSON is normalised first (keys that record
  time, wall seconds, host, pid, paths or the package version are dropped).

    python bench/house_digests.py --dir /tmp/hd --out bench/results/house_digests_before.json
    python bench/house_digests.py --dir /tmp/hd2 --compare bench/results/house_digests_before.json

Everything runs on 1 torch thread and 0 data workers, so the run is deterministic on one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

LYMPH = str(Path(sys.executable).with_name("lymph"))
VOLATILE = ("time", "second", "date", "host", "pid", "started", "finished", "created", "elapsed",
            "wall", "version", "path", "command", "argv", "python", "torch", "platform", "cpu",
            "rss", "duration", "eta", "rate", "throughput", "per_s", "mtime", "digest", "timings")
# .lymph-outputs.json lists the sha256 of each output, some of which record wall seconds: the
# outputs themselves are digested (normalised), so the manifest is left out.
SKIP = {".lymph-outputs.json"}
MODEL = ["--batch-size", "4", "--base-width", "4", "--depth", "2", "--crop", "32",
         "--workers", "0", "--threads", "1", "--quiet"]


def _lymph(*args: str) -> None:
    subprocess.run([LYMPH, *args], check=True, stdout=subprocess.DEVNULL)


def stages(d: Path) -> None:
    """The pipeline, each stage skipped when its output exists (so a killed run resumes)."""
    s = d / "slides"
    if not (s / "reference.csv").exists():
        _lymph("synth", "--out", str(s), "--tumor", "2", "--normal", "1", "--seed", "0",
               "--size", "3000x2000", "--threads", "1")
    _lymph("extract", "--slides", str(s), "--out", str(d / "store.zarr"), "--labels",
           str(s / "reference.csv"), "--level", "1", "--patch-size", "64",
           "--patches-per-slide", "24")
    if not (d / "pre" / "last.pt").exists():
        _lymph("train", "--store", str(d / "store.zarr"), "--out", str(d / "pre"), "--stage",
               "pretrain", "--steps", "12", "--eval-every", "6", *MODEL)
    if not (d / "ft" / "last.pt").exists():
        _lymph("train", "--store", str(d / "store.zarr"), "--out", str(d / "ft"), "--stage",
               "finetune", "--init", str(d / "pre" / "last.pt"), "--labeled", "24",
               "--steps", "12", "--eval-every", "6", "--val-slides", "1", *MODEL)
    if not (d / "evalp" / "metrics.json").exists():
        _lymph("eval", "patches", "--store", str(d / "store.zarr"), "--checkpoint",
               str(d / "ft" / "last.pt"), "--threshold", "0.5", "--out", str(d / "evalp"),
               "--batch-size", "4")
    if not (d / "maps" / "scores.csv").exists():
        _lymph("predict", "--slides", str(s), "--checkpoint", str(d / "ft" / "last.pt"),
               "--out", str(d / "maps"), "--level", "1", "--window", "256", "--threads", "1",
               "--batch-size", "4", "--quiet")
    if not (d / "evals" / "metrics.json").exists():
        _lymph("eval", "slides", "--slides", str(s), "--predictions", str(d / "maps"),
               "--out", str(d / "evals"))


def _clean(v: Any, root: str) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x, root) for k, x in sorted(v.items())
                if not any(w in k.lower() for w in VOLATILE)}
    if isinstance(v, list):
        return [_clean(x, root) for x in v]
    if isinstance(v, str) and root in v:
        return v.replace(root, "<dir>")
    return v


def _checkpoint(path: Path) -> str:
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=False)
    h = hashlib.sha256()
    for part in ("model", "optimizer"):
        state = ck.get(part, {})
        buf = io.BytesIO()
        flat = state if part == "model" else state.get("state", {})
        for k in sorted(flat, key=str):
            v = flat[k]
            items = v.items() if isinstance(v, dict) else [("", v)]
            for name, t in items:
                buf.write(f"{part}.{k}.{name}".encode())
                if hasattr(t, "numpy"):
                    buf.write(t.detach().contiguous().numpy().tobytes())
                else:
                    buf.write(repr(t).encode())
        h.update(buf.getvalue())
    h.update(repr(ck.get("step")).encode())
    return h.hexdigest()


def digest(d: Path) -> dict[str, str]:
    root = str(d.resolve())
    out: dict[str, str] = {}
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        rel = str(f.relative_to(d))
        if f.name in SKIP:
            continue
        if f.suffix == ".pt":
            out[rel] = _checkpoint(f)
        elif f.suffix in (".json", ".jsonl"):
            lines = f.read_text().splitlines() if f.suffix == ".jsonl" else [f.read_text()]
            norm = [json.dumps(_clean(json.loads(x), root), sort_keys=True) for x in lines if x]
            out[rel] = hashlib.sha256("\n".join(norm).encode()).hexdigest()
        elif f.suffix in (".png", ".log", ".lock") or f.name.endswith(".md"):
            continue  # figures (matplotlib metadata) and logs: not behaviour
        else:
            out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", type=Path)
    args = ap.parse_args()
    stages(args.dir)
    got = digest(args.dir)
    if args.out:
        args.out.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    print(f"{len(got)} files digested")
    if args.compare:
        want = json.loads(args.compare.read_text())
        diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        for k in diff:
            print(f"DIFFERS {k}: {want.get(k, 'absent')[:12]} -> {got.get(k, 'absent')[:12]}")
        print("identical" if not diff else f"{len(diff)} of {len(set(want) | set(got))} differ")
        raise SystemExit(1 if diff else 0)


if __name__ == "__main__":
    main()
