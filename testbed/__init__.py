"""A gateway on this machine, for the tests, the bench and the demo: private mosquitto brokers
on free loopback ports (`mosquitto`) and the agent started as a user starts it (`launch`).

It is not installed with the agent; it runs from the repository, like the tests.
"""
