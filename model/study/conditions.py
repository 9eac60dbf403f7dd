"""The study's conditions: their names, what each one is in the table's words, and which pairs
are compared (ΔF1 = F1(a) - F1(b))."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lymph.data.errors import ConfigError

SCRATCH = "scratch"
SEG_ONLY = "seg_only"
PRETRAINED = "pretrained_"  # + pretext name
BASELINES = (SCRATCH, SEG_ONLY)


def scratch_for(pretext: str) -> str:
    """The scratch condition whose fine-tuning loss is the `pretext` one's."""
    return SCRATCH if pretext == "identity" else f"{SCRATCH}_{pretext}"


def condition_label(condition: str, pretexts: Mapping[str, str] | None = None) -> str:
    """What a condition is, in the table's words (`pretexts`: condition -> its fine-tuning
    pretext)."""
    pretext = (pretexts or {}).get(condition, "identity")
    if condition == SCRATCH or condition.startswith(SCRATCH + "_"):
        return (
            f"{condition}: random init, the joint seg + recon loss with the {pretext!r} pretext "
            "(the initialisation-only ablation of the pretrained conditions with that pretext)"
        )
    if condition == SEG_ONLY:
        return "seg_only: random init, recon weight 0 (the paper's baseline: segmentation only)"
    if condition.startswith(PRETRAINED):
        name = condition[len(PRETRAINED) :]
        return (
            f"{condition}: init from the {name!r} checkpoint(s) (pretext {pretext!r}), joint loss "
            "with that pretext"
        )
    raise ConfigError(f"unknown condition {condition!r}")


def comparisons_for(
    conditions: Sequence[str], pretexts: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """(a, b) pairs compared as ΔF1 = F1(a) - F1(b): every pretrained condition against the
    scratch run with its fine-tuning loss (the primary family), then against seg_only, then
    later pretexts against the first."""
    pretexts = pretexts or {}
    pre = [c for c in conditions if c.startswith(PRETRAINED)]
    out = [
        (p, s) for p in pre if (s := scratch_for(pretexts.get(p, "identity"))) in conditions
    ]
    out += [(p, SEG_ONLY) for p in pre if SEG_ONLY in conditions]
    out += [(p, pre[0]) for p in pre[1:]]
    return out


def fine_tune_pretexts(
    conditions: Sequence[str], pretrained: Mapping[str, str]
) -> dict[str, str]:
    """condition -> the pretext of its fine-tuning loss: each pretrained condition keeps its
    checkpoints' pretext (`pretrained`), each scratch condition has its own, seg_only (recon
    weight 0) the first one's."""
    pretexts = dict(pretrained)
    for c in conditions:
        if c == SCRATCH or c.startswith(SCRATCH + "_"):
            pretexts[c] = c[len(SCRATCH) + 1 :] or "identity"
    pretexts[SEG_ONLY] = next(iter(pretrained.values()))
    return pretexts


def baseline_conditions(
    baselines: Sequence[str] | None, pretexts: Sequence[str]
) -> list[str]:
    """The baseline conditions run: scratch becomes one scratch run per pretext's fine-tuning
    loss (`pretexts`: the pretrained conditions' pretexts, in order)."""
    out: list[str] = []
    for b in baselines or BASELINES:
        out += [scratch_for(t) for t in dict.fromkeys(pretexts)] if b == SCRATCH else [b]
    return out
