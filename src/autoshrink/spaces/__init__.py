"""Search spaces: what a legal cell is, how a starting cell is drawn, and the published cells."""
