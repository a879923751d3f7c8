"""`python -m radx` is the `radx` command."""

import sys

from radx.app.cli import main

sys.exit(main())
