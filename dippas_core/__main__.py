from dippas_core.cli import main

raise SystemExit(main())
