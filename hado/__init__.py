"""HA-DO: keep an application running on one of several machines."""

__version__ = "0.1.0"
