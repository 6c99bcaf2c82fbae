"""Record: the status model and writing it back to Git.

Owns execution states and their conditions (status, pure), what a cycle hands to the
store (transitions), the status history read from Git (statushistory) and the write-back
of status documents (writeback, writeback_git).
May import: observe, gate, render, source, declare and the root base modules.
"""
