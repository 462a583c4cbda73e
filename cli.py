"""``python cli.py ...`` from a checkout: the same command line as the installed ``elmo-cache``."""

import sys

from elmo_cache.cli import main

if __name__ == "__main__":
    sys.exit(main())
