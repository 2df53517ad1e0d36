"""The local stand-in for the cloud: RabbitMQ nodes, Celery workers and network namespaces on this machine.

Supervises what it starts (sessions, group kills, records of crash leftovers) and stops only that.
Never imports the drills or the benchmarks, which build on it.
"""
