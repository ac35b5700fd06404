"""python -m minipar.observe.cost [--refresh]: fit this machine, print a scaling table."""

from minipar.observe.cost.fit import main

main()
