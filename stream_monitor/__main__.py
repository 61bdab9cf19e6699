from stream_monitor.cli import main

raise SystemExit(main())
