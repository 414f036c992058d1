"""Every YAML file of the collection parses: a broken one (a plain scalar holding ': ', say) would
otherwise show only when the role or playbook that reads it runs."""

import os
import subprocess

import pytest
import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _yaml_files():
    listed = subprocess.run(["git", "-C", ROOT, "ls-files", "--cached", "--others", "--exclude-standard",
                             "*.yml", "*.yaml"], capture_output=True, text=True, check=True).stdout.split()
    return sorted(path for path in listed if os.path.exists(os.path.join(ROOT, path)))


def test_there_are_yaml_files():
    assert "roles/lab/meta/argument_specs.yml" in _yaml_files()


@pytest.mark.parametrize("path", _yaml_files())
def test_it_parses(path):
    with open(os.path.join(ROOT, path)) as handle:
        list(yaml.safe_load_all(handle))


@pytest.mark.parametrize("path", [p for p in _yaml_files() if p.endswith("meta/argument_specs.yml")])
def test_role_option_descriptions_are_text(path):
    with open(os.path.join(ROOT, path)) as handle:
        specs = yaml.safe_load(handle)["argument_specs"]
    for entry, spec in specs.items():
        for name, option in spec.get("options", {}).items():
            description = option.get("description")
            lines = description if isinstance(description, list) else [description]
            assert lines and all(isinstance(line, str) and line for line in lines), (entry, name)
