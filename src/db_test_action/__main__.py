import sys

from db_test_action.cli import main

sys.exit(main())
