"""``python -m benchmarks``: every measurement this machine can run (:mod:`benchmarks.run`)."""

import sys

from benchmarks.run import main

sys.exit(main())
