"""Musical version identification pipeline (issue 5)."""
