"""Video copy detection pipeline (VSC22)."""
