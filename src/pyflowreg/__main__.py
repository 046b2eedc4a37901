"""``python -m pyflowreg``: the same as the ``pyflowreg`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
