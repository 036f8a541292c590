"""``python -m llmimg`` runs the command line."""

import sys

from llmimg.cli import main

sys.exit(main())
