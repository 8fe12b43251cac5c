"""Fixtures of the crm tests: a web-site source system with mappings of every record kind."""

from __future__ import annotations

import pytest

from crm.models import SourceSystem, User
from tests.touchpoint_data import web_source


@pytest.fixture
def web(db: None) -> SourceSystem:
    return web_source()


@pytest.fixture
def web_user(web: SourceSystem) -> User:
    return User.objects.get(source_system=web)
