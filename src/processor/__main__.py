"""`python -m processor --help`."""
import sys

from .cli import main

sys.exit(main())
