"""`python -m bench [--quick] [--out DIR] [--only 1,3] [--keep] [--no-plots]` (see bench/run.py)."""

import sys

from bench.run import main

sys.exit(main())
