"""Theory: GP (Wick) correlators, exact finite-width correlators, diagrams, cutoff lattices."""
