"""`python -m radx` is the `radx` command."""

import sys

from radx.app.lean import main

sys.exit(main())
