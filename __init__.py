"""lymph: find breast-cancer metastases in gigapixel lymph-node slides with few pixel labels."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lymph")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
