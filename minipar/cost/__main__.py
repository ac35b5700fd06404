"""python -m minipar.cost [--refresh]: fit this machine, print a scaling table."""

from minipar.cost.fit import main

main()
