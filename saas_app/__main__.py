from saas_app.cli import main

raise SystemExit(main())
