"""A fake Kubernetes API server for tests: real HTTP, the official client unmodified.

    with FakeKubeServer() as server:
        api = new_api_client(server, tmp_path)          # tests/fakekube_client.py
        tekton = TektonSimulator(server)
        ...

See server.py (the server), tekton.py and jobs.py (the controllers' part).
"""

from reconciler.simulator.errors import ApiError
from reconciler.simulator.faults import Denial, Fault
from reconciler.simulator.jobs import JobSimulator
from reconciler.simulator.resources import ResourceType, crd
from reconciler.simulator.server import DEFAULT_TOKEN, DEFAULT_USER, FakeKubeServer, RecordedRequest
from reconciler.simulator.tekton import TektonSimulator
from reconciler.simulator.watch import WatchEvent

__all__ = [
    "DEFAULT_TOKEN",
    "DEFAULT_USER",
    "ApiError",
    "Denial",
    "FakeKubeServer",
    "Fault",
    "JobSimulator",
    "RecordedRequest",
    "ResourceType",
    "TektonSimulator",
    "WatchEvent",
    "crd",
]
