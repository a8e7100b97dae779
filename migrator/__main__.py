"""
C{python -m migrator}: the operator's commands (see L{migrator._commands}).
"""

import sys

from migrator._commands import main

sys.exit(main())
