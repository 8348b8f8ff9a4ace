from extproc.control.cli import main

raise SystemExit(main())
