"""python -m minicpmo_cpp.convert ... (same as minicpmo-convert)."""

import sys

from .cli import main

sys.exit(main())
