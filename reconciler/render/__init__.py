"""Render: a resolved execution into its run manifest.

Owns the Jinja renderer (renderer) and the fast manifest loader (manifestload).
May import: source, declare and the root base modules.
"""
