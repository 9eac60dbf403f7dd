"""Condition names and the comparisons made (model/study/conditions.py)."""

from __future__ import annotations

from lymph.model.study import SCRATCH, SEG_ONLY, comparisons_for


def test_comparisons_pair_each_pretext_with_the_scratch_run_of_its_loss() -> None:
    conds = [SCRATCH, "scratch_genesis", SEG_ONLY, "pretrained_identity", "pretrained_genesis"]
    pretexts = {"pretrained_identity": "identity", "pretrained_genesis": "genesis"}
    assert comparisons_for(conds, pretexts) == [
        ("pretrained_identity", SCRATCH), ("pretrained_genesis", "scratch_genesis"),
        ("pretrained_identity", SEG_ONLY), ("pretrained_genesis", SEG_ONLY),
        ("pretrained_genesis", "pretrained_identity"),
    ]  # fmt: skip
