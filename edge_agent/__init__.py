"""WardWatch edge agent: the service on the home gateway, and owner of the wire contract."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wardwatch")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
