import sys

from ecom_pipeline.api.app import main

sys.exit(main())
