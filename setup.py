"""Packages for setuptools (metadata is in pyproject.toml): every package
under uffdtrace/, found, and the BPF sources, which live at the top of the
tree (bpf/) and ship inside the package as uffdtrace/bpf, where
uffdtrace/live/probes.py looks for them first."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["uffdtrace", "uffdtrace.*"]), "uffdtrace.bpf"],
      package_dir={"uffdtrace.bpf": "bpf"})
