"""Declare: from bytes to resolved executions (pure: no Git, no cluster, no clock).

Owns YAML loading with positions (yamldoc), the document model (model), names and
durations (names), validation messages (schema_errors), one execution file
(execution_file), the catalog (catalog), the cross-file checks (assemble), the
Declaration (declared) and the status *document* format (statusdoc).
May import: the root base modules (reconciler.errors, reconciler.safetext) only.
"""
