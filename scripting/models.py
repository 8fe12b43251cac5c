"""Call scripts: designer versions, runs and answers."""
