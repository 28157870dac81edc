"""careloop kernel: what two or more components share (wire contract, settings, storage adapters, registry, CLI)."""

__version__ = "0.1.0"
