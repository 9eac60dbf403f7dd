"""`lymph info`: what a patch store holds, and with --verify whether every chunk is intact
(lymph.data.store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def _state(slide: dict[str, Any]) -> str:
    """The `complete` column: yes, or NO with the cause and the fix, the fix stated once (a
    damage read from unreadable metadata already ends with it)."""
    if slide["complete"]:
        return "yes"
    damage = slide.get("damage")
    if not damage:
        return "NO (rerun lymph extract)"
    fix = "" if "lymph extract" in damage else " (rerun lymph extract)"
    return f"NO, damaged: {damage}{fix}"


def _print_info(info: dict[str, Any]) -> None:
    click.echo(f"store {info['path']}  schema version {info['schema_version']}")
    for key, value in info["settings"].items():
        click.echo(f"  {key}: {value}")
    click.echo(f"{'slide':<28} {'status':<10} {'patches':>8} {'tumor':>6} {'other':>6}  complete")
    for s in info["slides"]:
        nt = "-" if s["n_tumor"] is None else s["n_tumor"]
        no = "-" if s["n_non_tumor"] is None else s["n_non_tumor"]
        click.echo(f"{s['slide_id']:<28} {s['status']:<10} {s['n_patches']:>8} {nt:>6} "
                   f"{no:>6}  {_state(s)}")
    t = info["totals"]
    click.echo(f"{t['complete_slides']}/{t['slides']} slides complete; {t['patches']} patches "
               f"({t['tumor']} tumor, {t['non_tumor']} non-tumor, {t['unlabeled']} unlabeled)")
    if "verify" in info:
        v = info["verify"]
        for b in v["bad"]:
            click.echo(f"bad: {b['error']}", err=True)
        click.echo(f"verify: {v['chunks_checked']} chunks checked, {len(v['bad'])} bad")


@click.command("info")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.option("--verify", is_flag=True,
              help="Also read every chunk and check its checksum; list each bad one (exit 1).")
def info_cmd(store: Path, as_json: bool, verify: bool) -> None:
    """Show a patch store: schema version, settings, and per slide its status, patches per
    class and whether it is complete (marked complete and every array and chunk file there).

    \b
    Example:
      lymph info store.zarr --verify
    """
    import json

    from lymph.data.store import describe_store, verify_store

    info = describe_store(store)
    if verify:
        checked, bad = verify_store(store)
        info["verify"] = {"chunks_checked": checked, "bad": [
            {"slide_id": b.slide_id, "array": b.array, "chunk": b.chunk, "error": b.error}
            for b in bad]}
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        _print_info(info)
    if verify and info["verify"]["bad"]:
        raise SystemExit(1)
