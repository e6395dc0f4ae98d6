"""``python -m jaxfgcm.calibrate``: calibrate one tract (build stars -> fit cycles -> outputs).

Not implemented yet: the tract driver lands with the calibrate issue. Until then the command
says so and exits with status 2.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("jaxfgcm.calibrate: not implemented yet (the end-to-end tract driver is in progress)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
