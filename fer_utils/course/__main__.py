"""``python -m fer_utils.course --repository URL``: make a fork's notebooks install the fork."""

import sys

from fer_utils.course import main

sys.exit(main())
