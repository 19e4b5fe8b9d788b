"""The post-copy lab's parts (scripts/postcopy_lab.py is its command line)."""
