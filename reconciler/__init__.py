"""kubernaut-gitops-reconciler: a Git repository as the source of truth for remediation runs."""

__version__ = "0.1.0"
