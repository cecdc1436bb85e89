"""`python -m builder`: the same entry as the console script; no logic of its own."""

from builder.entry import main

main()
