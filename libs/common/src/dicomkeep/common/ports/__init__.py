"""Ports: the interfaces the services depend on."""
