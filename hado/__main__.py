"""``python3 -m hado``: the daemon, or a client command (see ``hado --help``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
