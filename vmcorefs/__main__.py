"""``python -m vmcorefs``: the same as the ``vmcorefs`` command."""

import sys

from .cli import main

sys.exit(main())
