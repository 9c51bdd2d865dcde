"""Packaging beside pyproject.toml: the repository's ``web/`` folder (templates and static
files of the UI) is shipped inside the package as ``node/web``, so that an installed
wheel is a complete node. The repository keeps its ``node/`` + ``web/`` layout; an
editable install reads ``web/`` where it lies (see ``node.render.web_dir``).
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["node", "node.*"]), "node.web"],
    package_dir={"node.web": "web"},
)
