"""``python -m syncnet``: see syncnet.cli."""
import sys

from syncnet.cli import main

sys.exit(main())
