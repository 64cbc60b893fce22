"""Entry point: ``python -m resnet_core.train --arch resnet20 --data PATH --out runs/r20``."""

from resnet_core.engine.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
