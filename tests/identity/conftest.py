from __future__ import annotations

import pytest

from tests.identity.world import World


@pytest.fixture
def world():
    w = World()
    yield w
    w.close()
