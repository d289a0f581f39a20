"""Small services several stages share: credentials checks and JSON-lines files."""
