"""``python -m llmimg`` runs the command line."""

import sys

from llmimg.cli.main import main

sys.exit(main())
