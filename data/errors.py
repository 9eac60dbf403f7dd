"""The lymph error hierarchy. Each error subclasses the standard error it refines, so callers may
catch either; every message names the file, the value and how to fix it."""

from __future__ import annotations


class LymphError(Exception):
    """Base of every error lymph raises on purpose."""


class SlideError(LymphError, OSError):
    """A slide cannot be opened or read (corrupt, unsupported, missing)."""


class NoTissueError(LymphError, ValueError):
    """A slide holds no tissue that lymph can sample from."""


class AnnotationError(LymphError, ValueError):
    """An annotation file is malformed, unsafe or of an unknown kind."""


class StoreError(LymphError, ValueError):
    """A Zarr store is missing, of another schema version, or made with other settings."""


class CheckpointError(LymphError, ValueError):
    """A checkpoint is missing, corrupt, or of another architecture."""


class ConfigError(LymphError, ValueError):
    """A setting is out of range; the message says which and what is allowed."""


class OutputError(LymphError, OSError):
    """An output cannot be written (read-only folder, full disk, a file in the way), or writing
    it would overwrite a file lymph did not write."""


# Errors that are both: what went wrong (a store, a checkpoint) and a bad setting the user
# fixes on the command line; as ConfigErrors the CLI exits 2 for them, as for any bad option.


class NotAStoreError(StoreError, ConfigError):
    """--store (or --out) names something that is not a lymph store (no zarr v3 group)."""


class LeakageError(CheckpointError, ConfigError):
    """A pretraining checkpoint saw slides the study tests on (or cannot be checked), and
    --allow-test-in-pretraining was not given."""
