"""Tests of medtune.models; helpers shared by its test files."""

from __future__ import annotations

import socket

import pytest


def forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any connection attempt fail, so a test proves a load is offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
