"""`python -m megalang` (what torchrun launches) runs the same CLI as the `megalang` script."""

from megalang.cli import main

main()
