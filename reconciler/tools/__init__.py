"""Tools: commands that act on a repository or run a whole service for a person.

Owns scaffolding a proposal (scaffold), the guided walk-through on a simulated cluster
(testdrive, testdrive_cluster) and the installation check (doctor).
May import: service and every stage below it, and reconciler.simulator (testdrive).
"""
