"""Pytest fixtures for the fake API server. Use with `pytest_plugins = ["tests.fakekube_fixtures"]`
in tests/conftest.py, or import the fixtures you need into a test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from reconciler.simulator.jobs import JobSimulator
from reconciler.simulator.server import FakeKubeServer
from reconciler.simulator.tekton import TektonSimulator
from tests.fakekube_client import new_api_client


@pytest.fixture
def fake_kube() -> Iterator[FakeKubeServer]:
    """A started server; fails the test if a simulator hook raised."""
    with FakeKubeServer() as server:
        yield server


@pytest.fixture
def kube_api(fake_kube: FakeKubeServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    api = new_api_client(fake_kube, tmp_path)
    yield api
    api.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def tekton(fake_kube: FakeKubeServer) -> Iterator[TektonSimulator]:
    sim = TektonSimulator(fake_kube)
    yield sim
    sim.close()


@pytest.fixture
def jobs(fake_kube: FakeKubeServer) -> Iterator[JobSimulator]:
    sim = JobSimulator(fake_kube)
    yield sim
    sim.close()
