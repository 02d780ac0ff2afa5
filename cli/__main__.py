"""`python -m cli`: the `dropship` command."""

import sys

from cli.main import main

sys.exit(main())
