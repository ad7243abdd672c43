"""``python -m vsp_assert.cli``: the same as the ``vsp-assert`` console script."""

import sys

from vsp_assert.cli import main

sys.exit(main())
