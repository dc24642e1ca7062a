"""``python -m axisor_client tail --url ... --user ... [--orders]``."""

import sys

from .cli import main

sys.exit(main())
