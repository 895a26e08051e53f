"""``python -m prvql`` runs the command line."""

import sys

from prvql.cli import main

sys.exit(main())
