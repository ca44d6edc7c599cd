"""`python -m engine …`: Loupe's command line."""
import sys

from engine.cli import main

sys.exit(main())
