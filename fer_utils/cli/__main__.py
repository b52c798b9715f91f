"""``python -m fer_utils.cli``: the same as the ``fer`` command."""

import sys

from fer_utils.cli import main

sys.exit(main())
