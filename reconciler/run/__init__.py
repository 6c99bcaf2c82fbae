"""Run: lock and cooldown decisions and the cluster.

Owns the lifecycle decisions (lifecycle, chains: pure), the cluster port (cluster), its
Kubernetes adapter (kube, kube_api: kube is the one module that imports kubernetes), the
watch cache (informer) and following runs (follow).
May import: record, observe, gate, render, source, declare and the root base modules.
"""
