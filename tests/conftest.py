"""Fixtures shared by test modules: a PostgreSQL server for the Optuna storage tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from postgres_server import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server on 127.0.0.1 for the session (started on first use). A server
    that cannot start fails the tests that need it, with the step's output: it never skips them."""
    try:
        server = PostgresServer().__enter__()
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql://fairsearch@127.0.0.1:PORT/testN``: a new, empty database for one test."""
    return postgres_server.create_database()
