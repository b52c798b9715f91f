"""``python -m fer_utils.course --check`` (the environment, for bug reports) or ``--repository URL``
(make a fork's notebooks install the fork)."""

import sys

from fer_utils.course import main

sys.exit(main())
