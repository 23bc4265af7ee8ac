"""A network lab in Linux network namespaces for HA-DO's lab tests (see netlab.py)."""
