"""Gate: may a new run start now?

Owns the gate (checks: signatures, policy, sync windows, concurrency), the image and
namespace policy (policy, pure; policy_file reads it from a file) and the sync windows
(windows, pure).
May import: render, source, declare and the root base modules.
"""
