"""Shared pytest set-up. Markers live in setup.cfg; tests import helpers from tests/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
