"""Voice–face association (issue 15): EFT-style expert fusion, its evaluation lists and its metrics."""
