"""Nothing to do here: installing pynetns enables its pytest plugin (entry point ``pynetns``), so the fixtures
``netns``, ``netns_factory``, ``netlab`` and ``pynetns_host`` are there; ``pyproject.toml`` also passes
``-p pynetns`` for machines where plugin autoloading is turned off.

Run the tests as root (they make network namespaces; without root they skip, saying how to enable them). To run
them through sudo instead, or with another firewall backend, override the session fixture ``pynetns_host``::

    @pytest.fixture(scope="session")
    def pynetns_host():
        return pynetns.Host(sudo=True, firewall="iptables")
"""
