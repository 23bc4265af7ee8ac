"""Shared pytest set-up. Markers live in setup.cfg; tests import helpers from tests/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


# Fixtures of the fake-clock tests (tests/test_middle.py, tests/test_other.py).
import pytest  # noqa: E402

from fakeclock import FakeClock  # noqa: E402
from hado import election  # noqa: E402


@pytest.fixture
def clock():
    """A clock that moves only when the test advances it (tests/fakeclock.py)."""
    return FakeClock()


@pytest.fixture
def decisions(monkeypatch):
    """Every decide() result of the node's turns, in order (node.turn calls election.decide)."""
    seen = []
    real = election.decide

    def spy(view, *args, **kwargs):
        out = real(view, *args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(election, "decide", spy)
    return seen
