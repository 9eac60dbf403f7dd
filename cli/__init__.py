"""The `lymph` command line: one module per command group, each command thin (parse the
options, build the stage's config, call its one `run`, print the result); all the work lives in
`lymph.pipeline`, `lymph.model` and `lymph.data`. This module owns the top-level group `main`
(the `lymph` console script) and registers every command on it; `common` holds the exit
convention and the options several commands share."""

from __future__ import annotations

import click

from lymph import __version__
from lymph.cli.common import LymphGroup
from lymph.cli.eval import eval_cmd
from lymph.cli.extract import extract_cmd
from lymph.cli.info import info_cmd
from lymph.cli.predict import predict_cmd
from lymph.cli.study import study_cmd
from lymph.cli.suggest import suggest_cmd
from lymph.cli.synth import synth_cmd
from lymph.cli.train import train_cmd
from lymph.cli.view import view_cmd

__all__ = ["main"]


# auto_envvar_prefix: every option can also come from LYMPH_<COMMAND>_<OPTION> (an option on the
# command line wins), e.g. LYMPH_TRAIN_STEPS=20: the README's toy-size run of its pipeline.
@click.group(cls=LymphGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                               "auto_envvar_prefix": "LYMPH"})
@click.version_option(__version__, prog_name="lymph")
def main() -> None:
    """Find breast-cancer metastases in gigapixel lymph-node slides with very few pixel labels.

    \b
    A typical run:
      lymph synth   --out slides/                 # or bring CAMELYON16
      lymph extract --slides slides/ --out store.zarr
      lymph train   --store store.zarr --out runs/pre --stage pretrain
      lymph train   --store store.zarr --out runs/ft --stage finetune --init runs/pre/last.pt
      lymph eval patches --store store.zarr --checkpoint runs/ft/best.pt
      lymph predict --slides slides/ --checkpoint runs/ft/best.pt --out maps/
      lymph view    --slides slides/ --predictions maps/   # look at them in the browser
    """


for _command in (synth_cmd, extract_cmd, info_cmd, train_cmd, eval_cmd, study_cmd, predict_cmd,
                 suggest_cmd, view_cmd):
    main.add_command(_command)
del _command
