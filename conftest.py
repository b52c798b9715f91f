"""Repository-wide pytest setup: the notebooks run in FAST mode (synthetic faces, seconds-long runs)
unless FER_FAST is set explicitly, so `pytest` executes the whole course quickly."""

import os

os.environ.setdefault("FER_FAST", "1")
