"""radx tests, run with trial."""
