"""A fake Kubernetes API server for tests: real HTTP, the official client unmodified.

    with FakeKubeServer() as server:
        api = new_api_client(server, tmp_path)          # tests/fakekube/client.py
        tekton = TektonSimulator(server)
        ...

See server.py (the server), tekton.py and jobs.py (the controllers' part).
"""

from tests.fakekube.errors import ApiError
from tests.fakekube.faults import Denial, Fault
from tests.fakekube.jobs import JobSimulator
from tests.fakekube.resources import ResourceType, crd
from tests.fakekube.server import DEFAULT_TOKEN, DEFAULT_USER, FakeKubeServer, RecordedRequest
from tests.fakekube.tekton import TektonSimulator
from tests.fakekube.watch import WatchEvent

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
