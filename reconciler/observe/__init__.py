"""Observe: what a run says right now (pure: takes run objects, returns data).

Owns the vocabulary shared by what follows (vocabulary: times, durations, failure
reasons), reading a run's status (runstatus), failure classification (failures,
failures_summary) and log evidence (logevidence).
May import: gate, render, source, declare and the root base modules.
"""
