"""Interlock: the ext_proc service, CLI, config, translation and simulator."""

__version__ = "0.1.0"
