"""Source: reading the repository at a commit.

Owns the Git adapter (gitcmd: the one module that imports GitPython or starts git), the
bare cache and its reads (gitsource, gitcache, gitread, githistory, gitbatch), credentials
(gitauth), the per-blob parse caches (parsecache*, parsestore), working directories
(workdir) and commit signatures (signatures).
May import: declare and the root base modules.
"""
