"""`lymph study`: does reconstruction pretraining help a UNet segment metastases from few labels?

The seed paper's Figure 3, run so that it can answer its question (issue 10):

- **Two worlds.** A labeled store (tumor and normal slides with masks) is split into K folds of
  whole slides; a *separate* pretraining store made the pretrained checkpoint(s). Every labeled
  slide is a test slide in one fold, so a labeled slide that pretrained a checkpoint would leak
  into a test fold: the study reads each checkpoint's recorded store and slide ids and refuses
  such a study unless `allow_test_in_pretraining` is set.
- **Inner validation.** In each (fold, repeat) a few training-fold slides (tumor first) are held
  out as inner-validation slides. They, and never the test fold, choose the fine-tune's stopping
  point (every `eval_every` steps the F1 at the F1-best threshold of the validation pixels,
  calibration-free (`TrainConfig.select="best_f1"`); best checkpoint kept, early stop after
  `patience` evaluations without improvement, `steps` the cap: the same rule for every
  condition) and its probability threshold (F1-best on every pixel of them, as
  `lymph eval --threshold auto`; `lymph.model.evaluate.evaluate` does both). Every patch of
  every test slide is then scored: P, R, F1 at that threshold and AP (threshold-free).
- **Conditions** on the same labeled subset, steps rule and training seed: one
  `pretrained_<name>` per pretext name (init from its checkpoint, joint segmentation +
  reconstruction loss with its pretext; several checkpoints of one name, e.g. two pretraining
  seeds, are used in turn: repeat r fine-tunes from checkpoint r mod n), a scratch run per
  pretext with the same fine-tuning loss (`scratch` for identity, `scratch_<pretext>` for the
  others: the initialisation-only ablation) and `seg_only` (random init, reconstruction weight
  0: the paper's baseline, a UNet trained directly on segmentation).
- **Repeats and statistics** (`lymph.model.study.stats`). folds x repeats pairs; the labeled
  subset, inner-validation slides and training seed are redrawn per repeat. The primary
  endpoint, declared before any run (table.md, protocol.json with its sha256), is ΔF1 =
  pretrained (first name) - its scratch at 40 labels (or the smallest size); only it gets a
  verdict: helps / hurts (exact Wilcoxon + t interval + Nadeau-Bengio corrected interval, at
  least 10 pairs), equivalent within the margin (TOST) or inconclusive. Every other comparison
  is an estimate with a Holm-adjusted p. A protocol changed after the first result is listed
  as a deviation.
- **Speed.** Each run uses one torch thread; runs go to `jobs` spawned processes (default: the
  cores); a tqdm bar over the grid shows the ETA. Each finished run writes
  `runs/<run_id>/done.json` atomically and last, so a killed study resumes where it stopped.

Outputs in OUT: study.json (every setting, the folds, the slide provenance), results.csv (one row
per run: which slides pretrained, trained, validated and tested it), table.md (protocol first,
then results and verdicts), f1_vs_size.png (every pair's points, the means and ΔF1 with CIs).

The package, by job: `config` (StudyConfig, its profiles and the settings in effect),
`conditions` (names, labels, comparisons), `plan` (folds, inner validation, subsets, seeds:
the grid), `pretraining` (checkpoint provenance and leakage checks), `prepare` (the plan of one
study), `execute` (one run), `pool` (runs in worker processes), `resume` (finished runs reused),
`protocol` (declaration, sha256, amendments), `stats` (paired statistics and verdicts),
`report` (table.md, results.csv, the figure) and `run` (`run(StudyConfig) -> StudyResult`).
"""

from __future__ import annotations

from lymph.model.study.conditions import (
    BASELINES,
    PRETRAINED,
    SCRATCH,
    SEG_ONLY,
    comparisons_for,
    condition_label,
    scratch_for,
)
from lymph.model.study.config import (
    DEFAULTS,
    PAPER_SIZES,
    PROFILE_KEYS,
    PROFILE_NOTES,
    PROFILES,
    StudyConfig,
    StudySettings,
    parse_pretrained,
)
from lymph.model.study.execute import RunContext, execute, init_for, run_one, train_options
from lymph.model.study.plan import (
    RunSpec,
    inner_val_slides,
    make_folds,
    plan_runs,
    subset_sha,
    train_seed,
)
from lymph.model.study.pool import execute_all
from lymph.model.study.prepare import StudyPlan
from lymph.model.study.pretraining import (
    PRETRAIN_RATIO,
    Pretraining,
    check_pretraining,
    corpus_note,
    read_pretraining,
)
from lymph.model.study.protocol import PRIMARY_SIZE, StudyProtocol
from lymph.model.study.report import CSV_FIELDS, write_results_csv
from lymph.model.study.run import StudyResult, run, study_context

__all__ = [
    "BASELINES", "CSV_FIELDS", "DEFAULTS", "PAPER_SIZES", "PRETRAINED", "PRETRAIN_RATIO",
    "PRIMARY_SIZE", "PROFILES", "PROFILE_KEYS", "PROFILE_NOTES", "SCRATCH", "SEG_ONLY",
    "Pretraining", "RunContext", "RunSpec", "StudyConfig", "StudyPlan", "StudyProtocol",
    "StudyResult", "StudySettings", "check_pretraining", "comparisons_for", "condition_label",
    "corpus_note", "execute", "execute_all", "init_for", "inner_val_slides", "make_folds",
    "parse_pretrained", "plan_runs", "read_pretraining", "run", "run_one", "scratch_for",
    "study_context", "subset_sha", "train_options", "train_seed", "write_results_csv",
]  # fmt: skip
