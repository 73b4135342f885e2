"""Topology files: TOML, JSON and YAML read to the same Topology, declared on a Lab, and refused with errors that
name the file, the field and the rule before anything is declared.

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_topology.py.
"""

import pytest

from pynetns import Lab
from pynetns.lab.topology import Topology


@pytest.mark.root
def test_a_topology_file_builds_a_lab_that_pings(tmp_path, host, token):
    path = tmp_path / "small.toml"
    path.write_text(
        f'name = "topo-{token}"\n'
        "[networks.front]\n"
        'subnet = "10.77.0.0/24"\n'
        f"[namespaces.web-{token}]\n"
        'networks = ["front"]\n'
        f"[namespaces.db-{token}]\n"
        'networks = [{ network = "front", ip = "10.77.0.10" }]\n'
    )
    topology = Topology.from_file(path)
    with Lab.from_topology(topology, host=host, isolated=True) as lab:
        assert lab.name == f"topo-{token}" and lab.isolated
        lab.apply()
        web = lab.namespaces[f"web-{token}"]
        web.run(["ping", "-c1", "-W2", "10.77.0.10"])
        back = lab.namespaces[f"db-{token}"].run(["ping", "-c1", "-W2", "10.77.0.2"], check=False)
        assert back.returncode == 0
