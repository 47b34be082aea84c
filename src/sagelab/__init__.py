"""sagelab: real-time voice conversations with AI agents, from notebooks and the command line."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sagelab")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
