import sys

from mmneuron.cli import main

sys.exit(main())
