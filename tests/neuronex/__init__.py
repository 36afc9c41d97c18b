"""A NeuronEX stand-in, a Modbus TCP counter device and an MQTT recorder (issue 14).

Programs run by the warm-standby tests and the continuity benchmark, each in its own
process (network namespaces of :mod:`tests.cluster.testbed`):

* :mod:`.device` — a pymodbus TCP server whose holding register 0 counts poll periods;
* :mod:`.standin` — the NeuronEX HTTP API subset hasup's ``neuronex`` backend uses, a
  southbound driver polling the device and a northbound app publishing to MQTT;
* :mod:`.recorder` — an MQTT subscriber writing every sample with its source node.
"""
