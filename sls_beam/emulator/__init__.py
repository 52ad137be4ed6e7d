"""A faithful local SLS web-tracking (PutWebTracking) emulator.

It is the embedded default of the example pipelines, the server every test
talks to, and something users can run in their own CI::

    python -m sls_beam.emulator --port 8080 --data-dir ./sls-data

It implements the server side of the protocol on its own (it never imports
the connector's encoder or client), so the two check each other.
"""

from sls_beam.emulator.faults import FAULT_KINDS, FaultPlan
from sls_beam.emulator.server import Emulator
from sls_beam.emulator.store import StoredLog, data_file

__all__ = ["Emulator", "FaultPlan", "FAULT_KINDS", "StoredLog", "data_file"]
