"""Helpers that need the official `kubernetes` client (kept apart: the server is stdlib-only)."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config

from reconciler.simulator.server import FakeKubeServer


def new_api_client(server: FakeKubeServer, directory: str | Path, *, context: str = "fake",
                   namespace: str | None = None) -> client.ApiClient:
    """A fresh `ApiClient` loaded from a kubeconfig the server writes (never the global config)."""
    path = server.write_kubeconfig(Path(directory) / f"kubeconfig-{server.port}-{context}",
                                   context=context, namespace=namespace)
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(path), context=context)
    return api
