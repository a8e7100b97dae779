"""
C{python -m migrator}: see L{migrator._cli}.
"""

import sys

from ._cli import main

sys.exit(main())
