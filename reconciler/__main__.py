"""``python -m reconciler`` runs the CLI.

``--version`` alone is answered here, before the CLI module is imported: that import pulls
in the Kubernetes client, Git, Jinja, the web stack and the models (about 0.4 s), none of
which printing a version needs.  The line is the one ``click.version_option`` prints.
"""

import sys

from reconciler import __version__


def run() -> None:
    if sys.argv[1:] == ["--version"]:
        print(f"reconciler, version {__version__}")
        return
    from reconciler.cli import main

    main()


if __name__ == "__main__":
    run()
