"""The shipped configs, installed as package data ``histo_daen.configs``: ``--config NAME`` loads ``NAME.yaml``."""
