"""Packages detectron2's Python files as the installed distribution ``detectron2``.

Used by tools/install.py on a staging copy of the pb1-detectron2==0.6 sdist; detectron2's
own setup.py cannot be used because it builds the C++ extension, whose sources are absent.
"""
from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="0.6",
    description="detectron2 0.6 Python code without compiled ops (from the pb1-detectron2 sdist)",
    license="Apache-2.0",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.7",
)
