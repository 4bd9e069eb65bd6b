"""Where rtmpc's packages live: each top-level folder of the repository is a subpackage of
``rtmpc`` (metadata, dependencies and extras are in pyproject.toml).

``package_dir`` maps ``rtmpc.sim`` to ``sim/`` and so on; subpackages follow their folder
(``rtmpc.models.pets`` is ``models/pets/``). Editable installs (``pip install -e``) map the
same way, so a folder added later imports without a reinstall.
"""

from setuptools import find_packages, setup

STAGES = ("configs", "sim", "models", "planners", "controller", "scripts")

packages = ["rtmpc"]
package_dir = {"rtmpc": "rtmpc"}
for stage in STAGES:
    packages.append(f"rtmpc.{stage}")
    package_dir[f"rtmpc.{stage}"] = stage
    packages += [f"rtmpc.{stage}.{sub}" for sub in find_packages(stage)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"rtmpc.configs": ["*.yaml"], "rtmpc.sim": ["assets/*.xml"], "rtmpc.scripts": ["reference/*.csv"]},
)
