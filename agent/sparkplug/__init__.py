"""Sparkplug B: reading edge nodes that speak it (`decoder`), from a payload schema declared in
code (`schema`), and an edge node to publish it (`edge`: tests, bench, replay).

Optional: it needs the protobuf runtime (`pip install 'edge-anomaly-agent[sparkplug]'`), and
nothing imports this package unless the config has a `sparkplug_b` source.
"""
