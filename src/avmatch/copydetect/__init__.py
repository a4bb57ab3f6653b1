"""Video copy detection (VSC22): frame descriptors, candidate recall, temporal localisation, µAPs."""
