"""Voice-face association pipeline (EFT): corpus -> ingest -> experts -> train -> extract -> evaluate."""
