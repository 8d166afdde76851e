"""graspd-asa: graspy's Python API on graspd, the node's shared GRASP core.

The modules ``grasp`` and ``graspi`` that come with this package present
graspy's ASA API, the old one and the RFC 8991 one, exactly as graspy does;
every call goes to graspd's ASA socket (``graspd_asa.core``), so every ASA
of a node shares one GRASP core: its discovery cache, flood cache,
relaying and security backend.  ``graspd_asa.forms`` holds the wire forms
(RFC 8990 objectives and locators, graspy's tag-24 rule).
"""

__version__ = "0.1.0"
