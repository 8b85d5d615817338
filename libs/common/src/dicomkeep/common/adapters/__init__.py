"""Adapters: embedded and distributed implementations of the ports."""
