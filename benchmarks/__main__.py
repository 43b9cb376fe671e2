"""``python -m benchmarks``: run every benchmark, then write docs/benchmarks.md."""

import sys

from benchmarks.run_all import main

sys.exit(main())
