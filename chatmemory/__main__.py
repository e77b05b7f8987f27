from chatmemory.cli import main

raise SystemExit(main())
