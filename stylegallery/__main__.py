import sys

from stylegallery.cli import main


sys.exit(main())
