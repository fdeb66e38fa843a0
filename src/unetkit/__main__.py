from unetkit.cli import main

raise SystemExit(main())
