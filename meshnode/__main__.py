import sys

from meshnode.client.cli import main

sys.exit(main())
