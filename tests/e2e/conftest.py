"""Fixtures shared by the end-to-end tests (the ``stack`` itself is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.stack import Stack


@pytest.fixture
def trio(stack: Stack, unique: Callable[[str], str]) -> tuple[str, str, str, str]:
    """alice, bob, carol and conv: alice and bob are its members, carol is a stranger to it."""
    alice, bob, carol, conv = unique("alice"), unique("bob"), unique("carol"), unique("conv")
    for name in (alice, bob, carol):
        stack.add_user(name)
    stack.create_conv(conv, alice, bob)
    return alice, bob, carol, conv
