"""Human-readable views of a result bundle (self-contained HTML), separate from the machine-readable leaderboard."""
