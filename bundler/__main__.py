from __future__ import annotations

from bundler.cli import main

if __name__ == "__main__":
    main()
