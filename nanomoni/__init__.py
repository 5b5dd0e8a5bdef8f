"""NanoMoni: micropayments in payment channels."""

__version__ = "0.1.0"
