"""Command line, twistd plugin options and console output."""
