"""``python -m syncnet``: see syncnet.cli."""
from syncnet.cli import run

run()
